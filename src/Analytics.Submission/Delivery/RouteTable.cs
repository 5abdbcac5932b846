namespace Analytics.Submission.Delivery;

/// <summary>
/// Which next hop a recipient goes to: a per-domain route first; then a local domain goes to the
/// mailbox server; anything else to the smarthost. Mail that came in on the MX is for local domains
/// only, so when no smarthost is configured it still goes to the mailbox server (a domain removed
/// from the directory after the message was accepted). Null: no next hop (a temporary failure).
/// </summary>
internal sealed class RouteTable : IAsyncDisposable
{
    private readonly List<(string Domain, bool Subdomains, INextHop Hop)> _routes = [];
    private readonly Func<string, bool> _isLocalDomain;
    private readonly List<INextHop> _all = [];

    public RouteTable(DeliveryOptions options, string heloName, Func<string, bool> isLocalDomain, TimeProvider time)
    {
        _isLocalDomain = isLocalDomain;
        if (options.Discard)
        {
            Discard = new DiscardNextHop();
            _all.Add(Discard);
            return;
        }

        INextHop Create(string name, NextHopOptions hop)
        {
            INextHop created = hop.Protocol == NextHopProtocol.Lmtp
                ? new LmtpNextHop(name, hop, options, heloName, time)
                : new SmtpNextHop(name, hop, options, heloName, time);
            _all.Add(created);
            return created;
        }

        if (options.Relay is { Hosts.Count: > 0 } relay)
        {
            Relay = Create("relay", relay);
        }

        if (options.Mailbox is { Hosts.Count: > 0 } mailbox)
        {
            Mailbox = Create("mailbox", mailbox);
        }

        foreach (var route in options.Routes ?? [])
        {
            var hop = Create("route:" + string.Join(",", route.Domains ?? []), route);
            foreach (var domain in route.Domains ?? [])
            {
                var d = domain.Trim().ToLowerInvariant();
                _routes.Add(d.StartsWith('.') ? (d[1..], true, hop) : (d, false, hop));
            }
        }
    }

    public INextHop? Relay { get; }

    public INextHop? Mailbox { get; }

    public INextHop? Discard { get; }

    public INextHop? Resolve(string recipient, string role)
    {
        if (Discard is not null)
        {
            return Discard;
        }

        var at = recipient.LastIndexOf('@');
        var domain = at >= 0 ? recipient[(at + 1)..].ToLowerInvariant() : "";
        foreach (var (d, subdomains, hop) in _routes)
        {
            if (subdomains ? domain.EndsWith("." + d, StringComparison.Ordinal) : domain == d)
            {
                return hop;
            }
        }

        if (Mailbox is not null && _isLocalDomain(domain))
        {
            return Mailbox;
        }

        return Relay ?? (role == "mx" ? Mailbox : null);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var hop in _all)
        {
            await hop.DisposeAsync();
        }
    }
}
