namespace Analytics.Cli;

/// <summary>
/// Where a command reads and writes. The terminal normally; captured buffers when the running server
/// executes a command on behalf of a CLI process (see <see cref="Admin.AdminEndpoint"/>).
/// </summary>
internal sealed record CliIO(TextWriter Out, TextWriter Error, TextReader In, bool InputRedirected)
{
    public static CliIO Console { get; } =
        new(System.Console.Out, System.Console.Error, System.Console.In, System.Console.IsInputRedirected);
}
