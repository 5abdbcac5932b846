using System.Globalization;
using System.Net;
using Microsoft.Extensions.Configuration;

namespace Analytics.Review;

/// <summary>
/// The <c>Review</c> section: where the console listens and how it guards logins. Validated at start-up
/// (<see cref="Validate"/>), so a bad endpoint fails before any port opens.
/// </summary>
public sealed class ReviewOptions
{
    public const string SectionName = "Review";

    /// <summary>Serve the console at all. Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>
    /// HTTP endpoint, HOST:PORT (IPv6 in brackets; <c>localhost</c>, <c>*</c> for every address). Default
    /// <c>127.0.0.1:8025</c>: loopback only. The console speaks plain HTTP: to expose it beyond the host,
    /// put a TLS reverse proxy in front. <c>serve --http HOST:PORT</c> sets it.
    /// </summary>
    public string Http { get; set; } = "127.0.0.1:8025";

    /// <summary>How long a login lasts (absolute, not sliding). Default 8 hours.</summary>
    public TimeSpan SessionLifetime { get; set; } = TimeSpan.FromHours(8);

    /// <summary>Failed logins from one client IP within <see cref="LoginWindow"/> before further attempts get 429. Default 10.</summary>
    public int LoginFailuresPerIp { get; set; } = 10;

    /// <summary>Failed logins for one reviewer name within <see cref="LoginWindow"/> before further attempts get 429. Default 5.</summary>
    public int LoginFailuresPerName { get; set; } = 5;

    /// <summary>The sliding window for failed-login counting. Default 15 minutes.</summary>
    public TimeSpan LoginWindow { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>
    /// Most client IPs, and most reviewer names, the login throttle tracks at once (each map; expired
    /// windows are swept first). Default 10 000. See <see cref="Reviewers.LoginThrottle"/> for what
    /// happens when a flood fills it.
    /// </summary>
    public int LoginTrackedKeys { get; set; } = 10_000;

    /// <summary>
    /// Reverse proxies (IP addresses or CIDR networks, e.g. <c>10.0.0.5</c>, <c>10.0.0.0/24</c>) whose
    /// <c>X-Forwarded-For</c> and <c>X-Forwarded-Proto</c> headers are believed: the client address then
    /// comes from X-Forwarded-For (the login throttle counts it) and a request the proxy received over
    /// HTTPS counts as HTTPS (the cookies get <c>Secure</c>). Default none: the headers are ignored from
    /// everyone, loopback included.
    /// </summary>
    public List<string> TrustedProxies { get; set; } = [];

    /// <summary>How long an API token lasts when <c>reviewers token --days</c> is not given. Default 90 days.</summary>
    public TimeSpan TokenLifetime { get; set; } = TimeSpan.FromDays(90);

    /// <summary>The longest lifetime a token may be issued with. Default 365 days.</summary>
    public TimeSpan TokenMaxLifetime { get; set; } = TimeSpan.FromDays(365);

    /// <summary>PBKDF2 iterations for new reviewer passwords. Default 210 000 (as for users).</summary>
    public int Pbkdf2Iterations { get; set; } = Store.PasswordHasher.DefaultIterations;

    /// <summary>How often the queue page refreshes itself. Default 15 seconds.</summary>
    public TimeSpan QueueRefresh { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Where the cookie-signing keys are kept. Default null: keys live in memory, so restarting
    /// <c>serve</c> logs every reviewer out (API tokens are unaffected).
    /// </summary>
    public string? KeysDirectory { get; set; }

    public static ReviewOptions FromConfiguration(IConfiguration configuration)
    {
        var options = new ReviewOptions();
        configuration.GetSection(SectionName).Bind(options);
        return options;
    }

    /// <summary>The endpoint to listen on; throws <see cref="FormatException"/> with the reason.</summary>
    public IPEndPoint ParseHttp() => ParseEndpoint(Http);

    public static IPEndPoint ParseEndpoint(string text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new FormatException("Review:Http is empty; give HOST:PORT, e.g. 127.0.0.1:8025.");
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 0 or > 65535)
        {
            throw new FormatException($"Review:Http '{text}' is not HOST:PORT with a port from 0 (any free port) to 65535.");
        }

        var host = text[..colon].Trim('[', ']');
        var address = host switch
        {
            "*" or "0.0.0.0" => IPAddress.Any,
            "localhost" => IPAddress.Loopback,
            _ when IPAddress.TryParse(host, out var ip) => ip,
            _ => throw new FormatException($"Review:Http '{text}': the host must be an IP address, localhost or *."),
        };
        return new IPEndPoint(address, port);
    }

    /// <summary>
    /// <see cref="TrustedProxies"/> parsed: single addresses and networks. Throws <see cref="FormatException"/>
    /// naming the entry that is neither.
    /// </summary>
    public (IReadOnlyList<IPAddress> Proxies, IReadOnlyList<IPNetwork> Networks) ParseTrustedProxies()
    {
        var proxies = new List<IPAddress>();
        var networks = new List<IPNetwork>();
        foreach (var entry in TrustedProxies)
        {
            var text = entry?.Trim() ?? "";
            if (!text.Contains('/', StringComparison.Ordinal) && IPAddress.TryParse(text, out var address))
            {
                proxies.Add(address);
            }
            else if (IPNetwork.TryParse(text, out var network))
            {
                networks.Add(network);
            }
            else
            {
                throw new FormatException($"Review:TrustedProxies entry '{entry}' is neither an IP address nor a CIDR network (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/64).");
            }
        }

        return (proxies, networks);
    }

    /// <summary>Every problem with the options, in words; empty when they are usable.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Enabled)
        {
            try
            {
                ParseHttp();
            }
            catch (FormatException ex)
            {
                errors.Add(ex.Message);
            }
        }

        if (SessionLifetime < TimeSpan.FromMinutes(1) || SessionLifetime > TimeSpan.FromDays(30))
        {
            errors.Add("Review:SessionLifetime must be between 1 minute and 30 days.");
        }

        if (LoginFailuresPerIp < 1 || LoginFailuresPerName < 1)
        {
            errors.Add("Review:LoginFailuresPerIp and Review:LoginFailuresPerName must be at least 1.");
        }

        if (LoginWindow <= TimeSpan.Zero)
        {
            errors.Add("Review:LoginWindow must be positive.");
        }

        if (LoginTrackedKeys is < 10 or > 10_000_000)
        {
            errors.Add("Review:LoginTrackedKeys must be between 10 and 10000000.");
        }

        try
        {
            ParseTrustedProxies();
        }
        catch (FormatException ex)
        {
            errors.Add(ex.Message);
        }

        if (TokenMaxLifetime < TimeSpan.FromHours(1) || TokenMaxLifetime > TimeSpan.FromDays(3650))
        {
            errors.Add("Review:TokenMaxLifetime must be between 1 hour and 3650 days.");
        }

        if (TokenLifetime < TimeSpan.FromHours(1) || TokenLifetime > TokenMaxLifetime)
        {
            errors.Add("Review:TokenLifetime must be at least 1 hour and at most Review:TokenMaxLifetime.");
        }

        if (Pbkdf2Iterations < 1)
        {
            errors.Add("Review:Pbkdf2Iterations must be at least 1.");
        }

        if (QueueRefresh < TimeSpan.FromSeconds(1))
        {
            errors.Add("Review:QueueRefresh must be at least 1 second.");
        }

        return errors;
    }
}
