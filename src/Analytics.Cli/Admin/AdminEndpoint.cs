using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Analytics.Cli.Admin;

internal sealed record AdminRequest(string[] Args, string? Stdin);

internal sealed record AdminResponse(int ExitCode, string Stdout, string Stderr);

[JsonSerializable(typeof(AdminRequest))]
[JsonSerializable(typeof(AdminResponse))]
internal sealed partial class AdminJson : JsonSerializerContext;

/// <summary>
/// The local admin endpoint: a Unix socket in the data directory. A CLI verb that finds the data
/// directory owned by a running server sends its argv here, and the server runs the same command
/// against its open store, so only the server's own user (and root) may use it. Two guards:
/// <list type="bullet">
/// <item>The file: Kestrel binds the socket inside a fresh private directory (0700), the socket is made
/// 0600 there, and only then renamed to <c>DATA/admin.sock</c>. No one else can reach it while it is
/// being set up, and at its public path it is never anything but 0600.</item>
/// <item>The caller: every request on the socket asks the kernel who is at the other end (SO_PEERCRED)
/// and is refused (403, and a warning in the log) unless that is root or the server's own uid, so a
/// socket whose mode was widened by hand still serves no one else.</item>
/// </list>
/// </summary>
internal sealed partial class AdminEndpoint
{
    public const string SocketName = "admin.sock";

    // Short: a Unix socket path has at most 107 bytes, and the staged path must fit wherever admin.sock does.
    private const string StagingPrefix = ".adm-";
    private const UnixFileMode OwnerOnlyDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode OwnerOnlySocket = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    private readonly string _dataDirectory;
    private readonly Lock _gate = new();
    private string? _stagingDirectory;

    private AdminEndpoint(string dataDirectory)
    {
        _dataDirectory = dataDirectory;
        Path = SocketPath(dataDirectory);
    }

    /// <summary>The public path, <c>DATA/admin.sock</c>.</summary>
    public string Path { get; }

    public static string SocketPath(string dataDirectory) => System.IO.Path.Combine(dataDirectory, SocketName);

    /// <summary>Makes Kestrel listen on the admin socket (staged in a private directory when the server starts).</summary>
    public static void Listen(WebApplicationBuilder builder, string dataDirectory)
    {
        var endpoint = new AdminEndpoint(dataDirectory);
        builder.Services.AddSingleton(endpoint);

        // Kestrel reads its options when the server starts: after the options were validated and the
        // store opened (so this process holds the data directory's lock), not when serve is composed.
        builder.WebHost.ConfigureKestrel(k => k.ListenUnixSocket(endpoint.Stage()));
    }

    public static void Map(WebApplication app)
    {
        var endpoint = app.Services.GetRequiredService<AdminEndpoint>();
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Analytics.Admin");
        var ownUid = geteuid();
        app.Use(async (http, next) =>
        {
            if (IsUnixSocket(http) && !PeerAllowed(http, ownUid, out var peerUid, out var peerPid))
            {
                LogRefused(log, peerUid?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unknown", peerPid ?? 0, ownUid);
                http.Response.StatusCode = StatusCodes.Status403Forbidden;
                http.Response.ContentType = "text/plain; charset=utf-8";
                await http.Response.WriteAsync($"This admin socket serves only root and uid {ownUid}, the user the server runs as.", http.RequestAborted);
                return;
            }

            await next(http);
        });

        app.MapPost("/admin/run", async (HttpContext http, ServerContext server, CancellationToken cancellationToken) =>
        {
            if (!IsUnixSocket(http))
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
            try
            {
                endpoint.Publish();
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                LogNotPublished(log, endpoint.Path, ex.Message);
            }
        });
        app.Lifetime.ApplicationStopped.Register(endpoint.Remove);
    }

    /// <summary>
    /// A fresh private directory for Kestrel to bind in; returns the socket's path inside it. Whatever
    /// an earlier server left (admin.sock, staging directories) is stale: this one holds the data lock.
    /// </summary>
    private string Stage()
    {
        lock (_gate)
        {
            if (_stagingDirectory is not null)
            {
                return System.IO.Path.Combine(_stagingDirectory, "s");
            }

            DeleteStale();
            var directory = System.IO.Path.Combine(_dataDirectory, StagingPrefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4)));
            Directory.CreateDirectory(directory, OwnerOnlyDirectory);

            // CreateDirectory succeeds on a directory that already exists, whatever its mode or owner: check
            // that this is a real directory that only we can enter (the umask can only take bits away).
            var info = new DirectoryInfo(directory);
            if (info.LinkTarget is not null || File.GetUnixFileMode(directory) != OwnerOnlyDirectory)
            {
                throw new CliException($"Cannot prepare the admin socket: {directory} is not a private (0700) directory of this process.", 2);
            }

            _stagingDirectory = directory;
            return System.IO.Path.Combine(directory, "s");
        }
    }

    /// <summary>Once Kestrel is bound: 0600, then renamed (atomically) to its public path.</summary>
    private void Publish()
    {
        lock (_gate)
        {
            if (_stagingDirectory is null)
            {
                return;
            }

            var staged = System.IO.Path.Combine(_stagingDirectory, "s");
            File.SetUnixFileMode(staged, OwnerOnlySocket);
            File.Move(staged, Path, overwrite: true);
            Directory.Delete(_stagingDirectory);
            _stagingDirectory = null;
        }
    }

    private void Remove()
    {
        lock (_gate)
        {
            try
            {
                File.Delete(Path);
                if (_stagingDirectory is not null)
                {
                    Directory.Delete(_stagingDirectory, recursive: true);
                    _stagingDirectory = null;
                }
            }
            catch (IOException)
            {
            }
        }
    }

    private void DeleteStale()
    {
        if (File.Exists(Path))
        {
            File.Delete(Path);
        }

        if (Directory.Exists(_dataDirectory))
        {
            foreach (var stale in Directory.EnumerateDirectories(_dataDirectory, StagingPrefix + "*"))
            {
                Directory.Delete(stale, recursive: true);
            }
        }
    }

    private static bool IsUnixSocket(HttpContext http) =>
        http.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket
            ? socket.AddressFamily == AddressFamily.Unix
            : http.Connection.LocalIpAddress is null && http.Connection.RemoteIpAddress is null;

    /// <summary>Root and the server's own user; anyone else, or a peer the kernel cannot name, is refused.</summary>
    private static bool PeerAllowed(HttpContext http, uint ownUid, out uint? uid, out int? pid)
    {
        uid = null;
        pid = null;
        if (http.Features.Get<IConnectionSocketFeature>()?.Socket is not { } socket)
        {
            return false;
        }

        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (Linux)
        Span<byte> ucred = stackalloc byte[12];
        try
        {
            if (socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) < 12)
            {
                return false;
            }
        }
        catch (SocketException)
        {
            return false;
        }

        pid = BinaryPrimitives.ReadInt32LittleEndian(ucred);
        uid = BinaryPrimitives.ReadUInt32LittleEndian(ucred[4..]);
        return uid == 0 || uid == ownUid;
    }

    // Linux, x86-64 and arm64 (the platforms the product ships for): SOL_SOCKET 1, SO_PEERCRED 17.
    private const int SolSocket = 1;
    private const int SoPeerCred = 17;

    [LibraryImport("libc")]
    private static partial uint geteuid();

    [LoggerMessage(Level = LogLevel.Warning, Message = "Admin socket: refused a request from uid {Uid} (pid {Pid}); it serves only root and uid {OwnUid}")]
    private static partial void LogRefused(ILogger logger, string uid, int pid, uint ownUid);

    [LoggerMessage(Level = LogLevel.Error, Message = "The admin socket could not be put at {Socket}: {Reason}; CLI verbs cannot reach this server")]
    private static partial void LogNotPublished(ILogger logger, string socket, string reason);

    internal static Encoding Utf8 { get; } = new UTF8Encoding(false);
}
