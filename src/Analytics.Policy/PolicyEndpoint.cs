using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Analytics.Policy;

/// <summary>
/// Where a policy service listens: a Unix socket (<c>unix:/path</c>) or a loopback TCP address
/// (<c>inet:127.0.0.1:10040</c>, <c>127.0.0.1:10040</c>, <c>[::1]:10040</c>). Addresses other than
/// loopback are refused: the protocols carry no authentication of their own.
/// </summary>
internal sealed partial record PolicyEndpoint(string? UnixPath, IPEndPoint? Tcp)
{
    public bool IsUnix => UnixPath is not null;

    public static bool TryParse(string? text, bool allowUnix, out PolicyEndpoint endpoint, out string error)
    {
        endpoint = new PolicyEndpoint(null, null);
        error = "";
        text = text?.Trim() ?? "";
        if (text.StartsWith("unix:", StringComparison.OrdinalIgnoreCase))
        {
            var path = text[5..];
            if (!allowUnix)
            {
                error = $"'{text}': a Unix socket is not possible here (Dovecot's policy client speaks HTTP over TCP); use 127.0.0.1:PORT.";
                return false;
            }

            if (path.Length == 0 || !Path.IsPathRooted(path))
            {
                error = $"'{text}': the socket path must be absolute (unix:/path/to/socket).";
                return false;
            }

            if (!Directory.Exists(Path.GetDirectoryName(path)))
            {
                error = $"'{text}': the socket's folder does not exist.";
                return false;
            }

            endpoint = new PolicyEndpoint(path, null);
            return true;
        }

        if (text.StartsWith("inet:", StringComparison.OrdinalIgnoreCase))
        {
            text = text[5..];
        }

        // An explicit port: "[v6]:PORT", or "v4:PORT" (one colon).
        var hasPort = text.StartsWith('[') ? text.Contains("]:", StringComparison.Ordinal) : text.Count(c => c == ':') == 1;
        if (!hasPort || !IPEndPoint.TryParse(text, out var ip))
        {
            error = $"'{text}' is not {(allowUnix ? "unix:/path or " : "")}HOST:PORT (e.g. 127.0.0.1:10040).";
            return false;
        }

        if (!IPAddress.IsLoopback(ip.Address))
        {
            error = $"'{text}': only a loopback address (127.0.0.1, ::1) is allowed; the protocol has no authentication of its own.";
            return false;
        }

        endpoint = new PolicyEndpoint(null, ip);
        return true;
    }

    public static PolicyEndpoint Parse(string text, bool allowUnix) =>
        TryParse(text, allowUnix, out var endpoint, out var error) ? endpoint : throw new FormatException(error);

    /// <summary>A listening socket here: a stale Unix socket file is replaced; mode and group are applied before the first connection.</summary>
    public Socket Bind(UnixFileMode mode = (UnixFileMode)0b110_110_000, int? group = null, int backlog = 512)
    {
        if (UnixPath is { } path)
        {
            if (File.Exists(path))
            {
                File.Delete(path); // a socket left by a previous run; binding would fail on it
            }

            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Bind(new UnixDomainSocketEndPoint(path));
                File.SetUnixFileMode(path, mode);
                if (group is { } gid && Chown(path, -1, gid) != 0)
                {
                    throw new IOException($"Could not give {path} to group {gid} (errno {Marshal.GetLastPInvokeError()}).");
                }

                socket.Listen(backlog);
                return socket;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        var tcp = new Socket(Tcp!.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            tcp.Bind(Tcp);
            tcp.Listen(backlog);
            return tcp;
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>How the bound socket is written in configuration (<c>unix:/path</c>, <c>127.0.0.1:PORT</c> with the real port).</summary>
    public static string Describe(Socket socket) => socket.LocalEndPoint switch
    {
        UnixDomainSocketEndPoint unix => "unix:" + unix,
        IPEndPoint ip => ip.ToString(),
        var other => other?.ToString() ?? "",
    };

    /// <summary>The id of a group in /etc/group, or null.</summary>
    public static int? GroupId(string name)
    {
        if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var numeric))
        {
            return numeric;
        }

        try
        {
            foreach (var line in File.ReadLines("/etc/group"))
            {
                var fields = line.Split(':');
                if (fields.Length > 2 && fields[0] == name && int.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out var gid))
                {
                    return gid;
                }
            }
        }
        catch (IOException)
        {
        }

        return null;
    }

    public override string ToString() => UnixPath is { } path ? "unix:" + path : Tcp!.ToString();

    [LibraryImport("libc", EntryPoint = "chown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Chown(string path, int owner, int group);
}
