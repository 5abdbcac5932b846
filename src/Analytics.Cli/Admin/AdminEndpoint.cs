using System.Text;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Analytics.Cli.Admin;

internal sealed record AdminRequest(string[] Args, string? Stdin);

internal sealed record AdminResponse(int ExitCode, string Stdout, string Stderr);

[JsonSerializable(typeof(AdminRequest))]
[JsonSerializable(typeof(AdminResponse))]
internal sealed partial class AdminJson : JsonSerializerContext;

/// <summary>
/// The local admin endpoint: a Unix socket in the data directory (file permissions, not the network,
/// guard it). A CLI verb that finds the data directory owned by a running server sends its argv here,
/// and the server runs the same command against its open store.
/// </summary>
internal static class AdminEndpoint
{
    public const string SocketName = "admin.sock";

    public static string SocketPath(string dataDirectory) => Path.Combine(dataDirectory, SocketName);

    public static void Listen(IWebHostBuilder webHost, string dataDirectory)
    {
        var path = SocketPath(dataDirectory);
        if (File.Exists(path))
        {
            // Left by a server that did not shut down cleanly; we own the data directory lock, so it is stale.
            File.Delete(path);
        }

        webHost.ConfigureKestrel(k => k.ListenUnixSocket(path));
    }

    public static void Map(WebApplication app, string dataDirectory)
    {
        var path = SocketPath(dataDirectory);
        app.MapPost("/admin/run", async (HttpContext http, ServerContext server, CancellationToken cancellationToken) =>
        {
            if (http.Connection.LocalPort != 0 || http.Connection.LocalIpAddress is not null)
            {
                // Only the Unix socket: never reachable over TCP, whatever else this app listens on.
                return Results.NotFound();
            }

            var request = await http.Request.ReadFromJsonAsync(AdminJson.Default.AdminRequest, cancellationToken);
            if (request is null)
            {
                return Results.BadRequest();
            }

            var stdout = new StringWriter();
            var stderr = new StringWriter();
            var input = new StringReader(request.Stdin ?? "");
            var code = await AnalyticsCli.RunAsync(request.Args, new CliIO(stdout, stderr, input, request.Stdin is not null), server, cancellationToken);
            return Results.Json(new AdminResponse(code, stdout.ToString(), stderr.ToString()), AdminJson.Default.AdminResponse);
        });
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            if (File.Exists(path))
            {
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
        });
        app.Lifetime.ApplicationStopped.Register(() =>
        {
            try
            {
                File.Delete(path);
            }
            catch (IOException)
            {
            }
        });
    }

    internal static Encoding Utf8 { get; } = new UTF8Encoding(false);
}
