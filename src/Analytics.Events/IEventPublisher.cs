namespace Analytics.Events;

/// <summary>Where the SMTP hot path hands events over. Never blocks and never throws.</summary>
public interface IEventPublisher
{
    /// <summary>
    /// Queues the event for the store. True when it was accepted (in memory or on disk); false when it
    /// was refused: malformed, after disposal, or memory full while the disk refuses the spool. Never
    /// throws: an SMTP session must not fail because the event path does.
    /// </summary>
    bool Publish(SmtpEvent smtpEvent);

    /// <summary>
    /// Waits, at most <paramref name="timeout"/>, until every event this caller published before the
    /// call would outlive the process (a SIGKILL, a crash): asked before a reply that tells a client its
    /// message was taken. True when they would; false when the time ran out or the publisher is
    /// stopping. Never throws but for <paramref name="cancellationToken"/>. Publishers that keep
    /// nothing in memory answer at once; a decorator passes the call on.
    /// </summary>
    ValueTask<bool> WaitDurableAsync(TimeSpan timeout, CancellationToken cancellationToken = default);
}

/// <summary>A publisher that records nothing: for `bench smtp` with event capture off.</summary>
public sealed class NullEventPublisher : IEventPublisher
{
    public static NullEventPublisher Instance { get; } = new();

    public bool Publish(SmtpEvent smtpEvent) => true;

    public ValueTask<bool> WaitDurableAsync(TimeSpan timeout, CancellationToken cancellationToken = default) => ValueTask.FromResult(true);
}
