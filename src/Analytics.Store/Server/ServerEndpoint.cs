using System.Globalization;
using ClickHouse.Driver.ADO;

namespace Analytics.Store.Server;

/// <summary>
/// Where a ClickHouse server is and how to log in, read from the <c>Store:Server</c> setting: either a
/// ClickHouse.Driver connection string or an <c>http(s)://user:pass@host:port/database</c> URL.
/// </summary>
/// <param name="Location">The server without credentials, safe to log and show.</param>
internal sealed record ServerEndpoint(ClickHouseClientSettings Settings, string Location)
{
    private const string Expected =
        "expected an http(s) URL (http://user:password@host:8123/database) or a connection string (Host=…;Port=8123;Username=…;Password=…;Database=…)";

    /// <exception cref="ArgumentException">The setting is neither form, or names an unusable server.</exception>
    public static ServerEndpoint Parse(string server)
    {
        if (string.IsNullOrWhiteSpace(server))
        {
            throw new ArgumentException($"No ClickHouse server given: {Expected}.", nameof(server));
        }

        server = server.Trim();
        var builder = server.Contains("://", StringComparison.Ordinal) ? FromUrl(server) : FromConnectionString(server);

        ClickHouseClientSettings settings;
        try
        {
            settings = new ClickHouseClientSettings(builder);
            settings.Validate();
        }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or InvalidCastException or OverflowException)
        {
            // The driver's messages name the offending setting, never its value, so they are safe to pass on.
            throw new ArgumentException($"Invalid ClickHouse server setting: {ex.Message}", nameof(server), ex);
        }

        if (Uri.CheckHostName(settings.Host) == UriHostNameType.Unknown)
        {
            throw new ArgumentException($"Invalid ClickHouse server setting: '{settings.Host}' is not a host name or address.", nameof(server));
        }

        return new ServerEndpoint(settings, LocationOf(settings));
    }

    // Messages below never echo the input: it may hold a password.
    private static ClickHouseConnectionStringBuilder FromUrl(string server)
    {
        if (!Uri.TryCreate(server, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps) || uri.Host.Length == 0)
        {
            throw new ArgumentException($"The ClickHouse server URL is not a valid http:// or https:// URL with a host: {Expected}.", nameof(server));
        }

        if (uri.Query.Length > 0 || uri.Fragment.Length > 0)
        {
            throw new ArgumentException(
                "The ClickHouse server URL must not have a query string or fragment; use a connection string for further options.", nameof(server));
        }

        var path = uri.AbsolutePath.Trim('/');
        if (path.Contains('/', StringComparison.Ordinal))
        {
            throw new ArgumentException(
                "The path of a ClickHouse server URL names the database and must be a single segment; " +
                "use a connection string with Path=… for a server behind a path prefix.", nameof(server));
        }

        // Port as written, or the scheme's own (80/443) when left out: that is what the URL means to any
        // other HTTP tool, and Location always shows the port that was chosen.
        var builder = new ClickHouseConnectionStringBuilder
        {
            Protocol = uri.Scheme,
            Host = uri.IdnHost,
            Port = (ushort)uri.Port,
        };

        if (uri.UserInfo.Length > 0)
        {
            var colon = uri.UserInfo.IndexOf(':', StringComparison.Ordinal);
            var user = colon < 0 ? uri.UserInfo : uri.UserInfo[..colon];
            if (user.Length > 0)
            {
                builder.Username = Uri.UnescapeDataString(user);
            }

            if (colon >= 0)
            {
                builder.Password = Uri.UnescapeDataString(uri.UserInfo[(colon + 1)..]);
            }
        }

        if (path.Length > 0)
        {
            builder.Database = Uri.UnescapeDataString(path);
        }

        return builder;
    }

    private static ClickHouseConnectionStringBuilder FromConnectionString(string server)
    {
        ClickHouseConnectionStringBuilder builder;
        try
        {
            builder = new ClickHouseConnectionStringBuilder(server);
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"The ClickHouse server setting is not a URL and not a valid connection string ({ex.Message}): {Expected}.", nameof(server), ex);
        }

        // The driver would quietly default a missing host to localhost and an unreadable port to 8123;
        // a typo in the setting should fail instead of talking to some other server.
        if (!builder.TryGetValue("Host", out var host) || string.IsNullOrWhiteSpace(Convert.ToString(host, CultureInfo.InvariantCulture)))
        {
            throw new ArgumentException($"The ClickHouse connection string names no Host: {Expected}.", nameof(server));
        }

        if (builder.TryGetValue("Port", out var port) &&
            !(int.TryParse(Convert.ToString(port, CultureInfo.InvariantCulture), NumberStyles.None, CultureInfo.InvariantCulture, out var number) && number is >= 1 and <= 65535))
        {
            throw new ArgumentException("The ClickHouse connection string's Port must be a number from 1 to 65535.", nameof(server));
        }

        return builder;
    }

    private static string LocationOf(ClickHouseClientSettings settings)
    {
        var host = settings.Host.Contains(':', StringComparison.Ordinal) ? $"[{settings.Host}]" : settings.Host;
        var server = string.Create(CultureInfo.InvariantCulture, $"{settings.Protocol}://{host}:{settings.Port}");
        var prefix = settings.Path?.Trim('/') ?? "";
        var database = settings.Database ?? "";

        // Without a path prefix the location is itself a URL Open accepts (minus the credentials).
        if (prefix.Length == 0)
        {
            return $"{server}/{Uri.EscapeDataString(database)}";
        }

        return database.Length == 0 ? $"{server}/{prefix}" : $"{server}/{prefix} (database {database})";
    }
}
