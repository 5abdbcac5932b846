namespace Analytics.Events;

/// <summary>Where the SMTP hot path hands events over. Never blocks and never throws for load.</summary>
public interface IEventPublisher
{
    /// <summary>Queues the event for the store. Returns false only after the sink has been disposed.</summary>
    bool Publish(SmtpEvent smtpEvent);
}

/// <summary>A publisher that records nothing: for `bench smtp` with event capture off.</summary>
public sealed class NullEventPublisher : IEventPublisher
{
    public static NullEventPublisher Instance { get; } = new();

    public bool Publish(SmtpEvent smtpEvent) => true;
}
