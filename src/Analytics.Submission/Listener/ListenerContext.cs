using Analytics.Events;
using Analytics.Limits;
using Analytics.Submission.Rules;
using Microsoft.Extensions.Logging;

namespace Analytics.Submission.Listener;

/// <summary>Everything a session needs, shared by all sessions of one listener. Read-only.</summary>
internal sealed class ListenerContext
{
    public required SubmissionOptions Options { get; init; }

    public required TimeProvider Time { get; init; }

    public required IEventPublisher Events { get; init; }

    /// <summary>The <c>Limits</c> section: <see cref="LimitsOptions.Session"/> bounds every session.</summary>
    public required LimitsOptions LimitOptions { get; init; }

    /// <summary>What the server answers and decides at each command (shared with the simulator).</summary>
    public required SessionRules Rules { get; init; }

    public required UserDirectory Users { get; init; }

    public required RecipientDirectory Recipients { get; init; }

    public required MailSpool Spool { get; init; }

    public required ILogger Logger { get; init; }

    public required ConnectionGate Gate { get; init; }

    public required RefusalCounter Refusals { get; init; }

    /// <summary>Bytes of messages being received across all sessions (<see cref="SessionLimitOptions.MaxDataInFlightBytes"/>).</summary>
    public required DataBudget DataBudget { get; init; }

    /// <summary>The delivery queue, when one is registered: it says whether the spool has room, and takes each accepted message.</summary>
    public Delivery.IMailQueue? Queue { get; init; }

    /// <summary>Set once shutdown begins: sessions between transactions are closed with 421 4.3.2.</summary>
    public volatile bool Draining;
}
