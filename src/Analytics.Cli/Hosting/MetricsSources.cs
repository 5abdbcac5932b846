using Analytics.Detection.Scoring;
using Analytics.Events;

namespace Analytics.Cli.Hosting;

/// <summary>
/// What the listener did, counted from the events it publishes: every SMTP session yields an event
/// per command with its reply code and outcome, so a decorator on <see cref="IEventPublisher"/>
/// counts sessions, replies and AUTH outcomes without touching the listener.
/// </summary>
internal sealed class SmtpMetrics
{
    public SmtpMetrics(MetricsRegistry registry)
    {
        Sessions = registry.Counter("analytics_smtp_sessions_total", "SMTP sessions opened, by listener role.", "role");
        Replies = registry.Counter("analytics_smtp_replies_total", "SMTP replies sent, by listener role and reply code.", "role", "code");
        Auth = registry.Counter("analytics_smtp_auth_total", "AUTH attempts, by mechanism and outcome (ok, reject, tempfail, error).", "mechanism", "outcome");
        Events = registry.Counter("analytics_smtp_events_total", "Session events published by the listener, by kind.", "kind");
        Throttles = registry.Counter("analytics_smtp_throttled_total", "Times the listener acted on a session (limit, tarpit, lock), by role.", "role");
    }

    public Counter Sessions { get; }

    public Counter Replies { get; }

    public Counter Auth { get; }

    public Counter Events { get; }

    public Counter Throttles { get; }

    public void Count(SmtpEvent e)
    {
        var role = Name(e.Role);
        Events.Inc(Name(e.Kind));
        switch (e.Kind)
        {
            case EventKind.Connect:
                Sessions.Inc(role);
                break;
            case EventKind.Auth:
                Auth.Inc(e.Mechanism is { Length: > 0 } m ? m.ToUpperInvariant() : "none", Name(e.Outcome));
                break;
            case EventKind.Throttle:
                Throttles.Inc(role);
                break;
        }

        if (e.ReplyCode != 0)
        {
            Replies.Inc(role, Code(e.ReplyCode));
        }
    }

    // Closed sets, named once: no allocation per event for the label values.
    private static string Name(ListenerRole role) => role == ListenerRole.Mx ? "mx" : "submission";

    private static string Name(EventKind kind) => kind switch
    {
        EventKind.Connect => "connect",
        EventKind.Ehlo => "ehlo",
        EventKind.StartTls => "starttls",
        EventKind.Auth => "auth",
        EventKind.Mail => "mail",
        EventKind.Rcpt => "rcpt",
        EventKind.Data => "data",
        EventKind.Rset => "rset",
        EventKind.Invalid => "invalid",
        EventKind.Close => "close",
        EventKind.Throttle => "throttle",
        EventKind.Delivery => "delivery",
        _ => "other",
    };

    private static string Name(EventOutcome outcome) => outcome switch
    {
        EventOutcome.Ok => "ok",
        EventOutcome.Reject => "reject",
        EventOutcome.TempFail => "tempfail",
        EventOutcome.Error => "error",
        _ => "none",
    };

    private static readonly string[] Codes = Enumerable.Range(0, 600).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    private static string Code(ushort code) => code < Codes.Length ? Codes[code] : "other";
}

/// <summary>Counts each event, then hands it to the real publisher (the sink). Adds one counter bump per event.</summary>
internal sealed class CountingEventPublisher : IEventPublisher
{
    private readonly IEventPublisher _inner;
    private readonly SmtpMetrics _metrics;

    public CountingEventPublisher(IEventPublisher inner, SmtpMetrics metrics)
    {
        _inner = inner;
        _metrics = metrics;
    }

    public bool Publish(SmtpEvent smtpEvent)
    {
        _metrics.Count(smtpEvent);
        return _inner.Publish(smtpEvent);
    }

    public ValueTask<bool> WaitDurableAsync(TimeSpan timeout, CancellationToken cancellationToken = default) => _inner.WaitDurableAsync(timeout, cancellationToken);
}

/// <summary>Counts the scorer's flags by class as the verdicts come out of each pass.</summary>
internal sealed class FlagMetrics : IVerdictListener
{
    private readonly Counter _flags;

    public FlagMetrics(MetricsRegistry registry) =>
        _flags = registry.Counter("analytics_flags_total", "Verdicts that flagged an entity, by class and entity kind.", "class", "entity_kind");

    public void OnVerdicts(IReadOnlyList<Verdict> verdicts)
    {
        foreach (var v in verdicts)
        {
            if (v.Flagged)
            {
                _flags.Inc(v.Class.ToText(), v.Entity.Kind.ToText());
            }
        }
    }
}
