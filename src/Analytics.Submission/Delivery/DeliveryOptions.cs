using System.ComponentModel.DataAnnotations;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Microsoft.Extensions.Options;

namespace Analytics.Submission.Delivery;

/// <summary>How a next hop is spoken to.</summary>
public enum NextHopProtocol
{
    /// <summary>ESMTP (a smarthost, or a Postfix in front of the mailboxes).</summary>
    Smtp,

    /// <summary>LMTP (RFC 2033), e.g. Dovecot's lmtp service: one reply per recipient after DATA.</summary>
    Lmtp,
}

/// <summary>TLS towards a next hop.</summary>
public enum NextHopTls
{
    /// <summary>STARTTLS when the next hop offers it, plaintext otherwise.</summary>
    Opportunistic,

    /// <summary>STARTTLS or no delivery (the attempt is deferred).</summary>
    Required,

    /// <summary>Never (a Unix socket, or a mailbox server on the same host).</summary>
    None,

    /// <summary>TLS from the first byte (RFC 8314, port 465).</summary>
    Implicit,
}

/// <summary>One next hop: hosts tried in order, how to speak to them, how many connections to keep.</summary>
public class NextHopOptions
{
    /// <summary>
    /// <c>HOST:PORT</c> (a name or an IP address; <c>[v6]:PORT</c>) or <c>unix:/path/to/socket</c>, tried in
    /// order: the next one is tried when a host cannot be reached or refuses the session. Required.
    /// </summary>
    public List<string>? Hosts { get; set; }

    /// <summary>SMTP or LMTP. Default SMTP.</summary>
    public NextHopProtocol Protocol { get; set; } = NextHopProtocol.Smtp;

    /// <summary>Opportunistic, Required, None or Implicit. Default Opportunistic.</summary>
    public NextHopTls Tls { get; set; } = NextHopTls.Opportunistic;

    /// <summary>Check the next hop's certificate (chain and name). Default true; false only for a self-signed hop on loopback.</summary>
    public bool VerifyCertificate { get; set; } = true;

    /// <summary>AUTH to the next hop as this user (SMTP only). Default none.</summary>
    public string? Username { get; set; }

    /// <summary>The AUTH password; prefer <see cref="PasswordFile"/> or the environment (ANALYTICS_Delivery__Relay__Password).</summary>
    public string? Password { get; set; }

    /// <summary>A file whose first line is the AUTH password (readable by the server only).</summary>
    public string? PasswordFile { get; set; }

    /// <summary>AUTH without TLS (Tls None or Opportunistic). Default false: the password would cross the network in clear.</summary>
    public bool AllowInsecureAuth { get; set; }

    /// <summary>Connections kept open to this next hop, and the most used at once. Default 4.</summary>
    [Range(1, 1000)]
    public int MaxConnections { get; set; } = 4;

    /// <summary>Messages one connection carries before it is closed and a fresh one is opened. Default 100.</summary>
    [Range(1, 1_000_000)]
    public int MessagesPerConnection { get; set; } = 100;

    /// <summary>An idle pooled connection is closed after this long (next hops drop idle sessions at ~5 min). Default 30 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "01:00:00")]
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>A next hop for some recipient domains only (section <c>Delivery:Routes</c>, a list).</summary>
public sealed class RouteOptions : NextHopOptions
{
    /// <summary>Recipient domains sent to this hop; <c>.example.org</c> matches its subdomains (as in Postfix's transport maps), list both for both. Required.</summary>
    public List<string>? Domains { get; set; }
}

/// <summary>
/// Delivery onward (configuration section <c>Delivery</c>): where accepted mail goes and how the
/// queue on the spool retries it. With no next hop configured the accepted mail stays in the spool.
/// The backoff defaults are Postfix's (minimal_backoff_time, maximal_backoff_time, maximal_queue_lifetime).
/// </summary>
public sealed class DeliveryOptions
{
    public const string SectionName = "Delivery";

    /// <summary>Smarthost for mail to non-local domains (what submission relays). Default none.</summary>
    [ValidateObjectMembers]
    public NextHopOptions? Relay { get; set; }

    /// <summary>Mailbox server for local domains (what the MX accepts): LMTP or SMTP. Default none.</summary>
    [ValidateObjectMembers]
    public NextHopOptions? Mailbox { get; set; }

    /// <summary>Per-domain next hops, checked before <see cref="Relay"/> and <see cref="Mailbox"/>. Default none.</summary>
    public List<RouteOptions>? Routes { get; set; }

    /// <summary>Accept, count and drop every message (serve --demo). Default false.</summary>
    public bool Discard { get; set; }

    /// <summary>Messages delivered at once, over all next hops. Default 16.</summary>
    [Range(1, 10_000)]
    public int Concurrency { get; set; } = 16;

    /// <summary>First wait after a temporary failure; each further one doubles it up to <see cref="MaximalBackoff"/>. Default 5 min (Postfix minimal_backoff_time 300s).</summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "1.00:00:00")]
    public TimeSpan MinimalBackoff { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Longest wait between two attempts. Default 4000 s (Postfix maximal_backoff_time).</summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "7.00:00:00")]
    public TimeSpan MaximalBackoff { get; set; } = TimeSpan.FromSeconds(4000);

    /// <summary>How long a message may stay before what is still undelivered bounces (DSN, 4.4.7). Default 5 days (maximal_queue_lifetime).</summary>
    [Range(typeof(TimeSpan), "00:00:01", "100.00:00:00")]
    public TimeSpan QueueLifetime { get; set; } = TimeSpan.FromDays(5);

    /// <summary>Time allowed to connect and get the greeting from one host. Default 30 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:10:00")]
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Time allowed for one command's reply (the reply to DATA's end included). Default 5 min.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "01:00:00")]
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Bytes of queued mail past which new mail is refused (452 4.3.1); 0 = no quota. Default 0.</summary>
    [Range(0, long.MaxValue)]
    public long SpoolQuotaBytes { get; set; }

    /// <summary>Free space the spool's file system must keep after a new message, else 452 4.3.1. Default 64 MiB.</summary>
    [Range(0, long.MaxValue)]
    public long MinFreeBytes { get; set; } = 64L << 20;

    /// <summary>Whether anything delivers: a next hop, a route, or <see cref="Discard"/>.</summary>
    public bool IsConfigured => Discard || Relay?.Hosts is { Count: > 0 } || Mailbox?.Hosts is { Count: > 0 } || Routes is { Count: > 0 };
}

/// <summary>Where a next hop listens: a TCP host and port, or a Unix socket.</summary>
public sealed record NextHopAddress(string Host, int Port, string? UnixPath)
{
    public static bool TryParse(string? text, [NotNullWhen(true)] out NextHopAddress? address)
    {
        address = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        text = text.Trim();
        if (text.StartsWith("unix:", StringComparison.OrdinalIgnoreCase))
        {
            var path = text[5..];
            if (!Path.IsPathRooted(path))
            {
                return false;
            }

            address = new NextHopAddress("localhost", 0, path);
            return true;
        }

        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            return false;
        }

        var host = text[..colon];
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        else if (host.Contains(':', StringComparison.Ordinal))
        {
            return false; // an IPv6 address needs brackets, or the port is ambiguous
        }

        if (host.Length == 0 || host.Any(char.IsWhiteSpace))
        {
            return false;
        }

        address = new NextHopAddress(host, port, null);
        return true;
    }

    public override string ToString() => UnixPath is { } path ? "unix:" + path : (Host.Contains(':', StringComparison.Ordinal) ? $"[{Host}]:{Port}" : $"{Host}:{Port}").ToString(CultureInfo.InvariantCulture);
}

/// <summary>Rules attributes cannot say; each failure names the setting and the bad value.</summary>
public sealed class DeliveryOptionsValidator : IValidateOptions<DeliveryOptions>
{
    public ValidateOptionsResult Validate(string? name, DeliveryOptions options)
    {
        var errors = new List<string>();
        var top = new List<ValidationResult>();
        if (!Validator.TryValidateObject(options, new ValidationContext(options), top, validateAllProperties: true))
        {
            errors.AddRange(top.Select(r => $"Delivery:{string.Join(",", r.MemberNames)}: {r.ErrorMessage}"));
        }

        if (options.MaximalBackoff < options.MinimalBackoff)
        {
            errors.Add("Delivery:MaximalBackoff must be at least MinimalBackoff.");
        }

        if (options.QueueLifetime < options.MinimalBackoff)
        {
            errors.Add("Delivery:QueueLifetime must be at least MinimalBackoff.");
        }

        if (options.Relay is { } relay)
        {
            CheckHop("Delivery:Relay", relay, errors);
        }

        if (options.Mailbox is { } mailbox)
        {
            CheckHop("Delivery:Mailbox", mailbox, errors);
        }

        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < (options.Routes?.Count ?? 0); i++)
        {
            var route = options.Routes![i];
            var setting = string.Create(CultureInfo.InvariantCulture, $"Delivery:Routes:{i}");
            CheckHop(setting, route, errors);
            if (route.Domains is not { Count: > 0 })
            {
                errors.Add($"{setting}:Domains: a route needs at least one recipient domain.");
            }

            foreach (var domain in route.Domains ?? [])
            {
                var bare = domain.Trim().TrimStart('.');
                if (bare.Length == 0 || bare.Contains('@', StringComparison.Ordinal) || bare.Any(char.IsWhiteSpace) || !bare.Contains('.', StringComparison.Ordinal) && bare != "localhost")
                {
                    errors.Add($"{setting}:Domains: '{domain}' is not a domain (example.org, or .example.org for its subdomains too).");
                }
                else if (!seen.Add(domain.Trim()))
                {
                    errors.Add($"{setting}:Domains: '{domain}' has two routes.");
                }
            }
        }

        if (options.Discard && (options.Relay is not null || options.Mailbox is not null || options.Routes is { Count: > 0 }))
        {
            errors.Add("Delivery:Discard drops every message: it cannot be combined with Relay, Mailbox or Routes.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void CheckHop(string setting, NextHopOptions hop, List<string> errors)
    {
        var results = new List<ValidationResult>();
        if (!Validator.TryValidateObject(hop, new ValidationContext(hop), results, validateAllProperties: true))
        {
            errors.AddRange(results.Select(r => $"{setting}:{string.Join(",", r.MemberNames)}: {r.ErrorMessage}"));
        }

        if (hop.Hosts is not { Count: > 0 })
        {
            errors.Add($"{setting}:Hosts: no host; give HOST:PORT or unix:/path (several are tried in order).");
        }

        foreach (var host in hop.Hosts ?? [])
        {
            if (!NextHopAddress.TryParse(host, out var address))
            {
                errors.Add($"{setting}:Hosts: '{host}' is not HOST:PORT (port 1-65535, [v6]:PORT) or unix:/absolute/path.");
            }
            else if (address.UnixPath is not null && hop.Tls is NextHopTls.Required or NextHopTls.Implicit)
            {
                errors.Add($"{setting}:Tls: {hop.Tls} over the Unix socket '{host}' makes no sense; use None.");
            }
        }

        var hasUser = !string.IsNullOrEmpty(hop.Username);
        if (hasUser && hop.Protocol == NextHopProtocol.Lmtp)
        {
            errors.Add($"{setting}:Username: LMTP has no AUTH; remove it or use Protocol Smtp.");
        }

        if (!string.IsNullOrEmpty(hop.Password) && !string.IsNullOrEmpty(hop.PasswordFile))
        {
            errors.Add($"{setting}: Password and PasswordFile are both set; keep one.");
        }

        if (!string.IsNullOrEmpty(hop.PasswordFile) && !File.Exists(hop.PasswordFile))
        {
            errors.Add($"{setting}:PasswordFile: '{hop.PasswordFile}' does not exist.");
        }

        if (hasUser && string.IsNullOrEmpty(hop.Password) && string.IsNullOrEmpty(hop.PasswordFile))
        {
            errors.Add($"{setting}:Username is set without Password or PasswordFile.");
        }

        if (!hasUser && (!string.IsNullOrEmpty(hop.Password) || !string.IsNullOrEmpty(hop.PasswordFile)))
        {
            errors.Add($"{setting}: a password is set without Username.");
        }

        if (hasUser && hop.Tls is NextHopTls.None or NextHopTls.Opportunistic && !hop.AllowInsecureAuth)
        {
            errors.Add($"{setting}:Tls is {hop.Tls} with AUTH: the password could cross the network in clear. Use Required or Implicit (or set AllowInsecureAuth).");
        }
    }
}
