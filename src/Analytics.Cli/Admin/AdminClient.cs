using System.Net.Http.Json;
using System.Net.Sockets;

namespace Analytics.Cli.Admin;

/// <summary>Sends a CLI command to the server that owns the data directory, through its admin socket.</summary>
internal static class AdminClient
{
    private static readonly TimeSpan StartupGrace = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    /// <param name="stdin">Sent as the command's stdin instead of this process's (when the command read it already).</param>
    public static async Task<int> ForwardAsync(string dataDirectory, string[] args, CliIO io, string? stdin, CancellationToken cancellationToken)
    {
        var socket = AdminEndpoint.SocketPath(dataDirectory);
        // A server that is starting holds the lock before its socket exists: give it a moment.
        for (var waited = TimeSpan.Zero; !File.Exists(socket) && waited < StartupGrace; waited += PollInterval)
        {
            await Task.Delay(PollInterval, cancellationToken);
        }

        if (!File.Exists(socket))
        {
            throw new CliException(
                $"The data directory {dataDirectory} is locked by another process, and it has had no admin socket ({socket}) " +
                $"for {StartupGrace.TotalSeconds:0} s: another command may be using it. Retry when it has finished.", 2);
        }

        stdin ??= io.InputRedirected ? await io.In.ReadToEndAsync(cancellationToken) : null;
        using var http = Create(socket);
        HttpResponseMessage response;
        try
        {
            response = await http.PostAsJsonAsync("/admin/run", new AdminRequest(args, stdin), AdminJson.Default.AdminRequest, cancellationToken);
        }
        catch (HttpRequestException ex)
        {
            throw new CliException($"The server owning {dataDirectory} did not answer on {socket}: {ex.Message}", 2);
        }

        using (response)
        {
            if (response.StatusCode == System.Net.HttpStatusCode.Forbidden)
            {
                var reason = await response.Content.ReadAsStringAsync(cancellationToken);
                throw new CliException($"The server refused the command: {reason}", 2);
            }

            if (!response.IsSuccessStatusCode)
            {
                throw new CliException($"The server refused the command: HTTP {(int)response.StatusCode}.", 2);
            }

            var result = await response.Content.ReadFromJsonAsync(AdminJson.Default.AdminResponse, cancellationToken)
                ?? throw new CliException("The server sent an empty answer.", 2);
            await io.Out.WriteAsync(result.Stdout);
            await io.Error.WriteAsync(result.Stderr);
            return result.ExitCode;
        }
    }

    private static HttpClient Create(string socketPath)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, token) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), token);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            },
        };
        return new HttpClient(handler) { BaseAddress = new Uri("http://admin.local"), Timeout = TimeSpan.FromMinutes(10) };
    }
}
