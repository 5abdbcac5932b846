namespace Analytics.Events;

/// <summary>How the sink is doing, for /metrics, logs and health checks.</summary>
public enum EventSinkHealth
{
    /// <summary>Batches reach the store.</summary>
    Healthy = 0,

    /// <summary>The store fails: batches go to the disk spool and are replayed when it answers.</summary>
    StoreDown = 1,

    /// <summary>The disk refuses the spool: batches wait in memory (bounded), and once memory is full new events are refused.</summary>
    SpoolFailing = 2,
}

/// <summary>
/// Counters of the sink since it started. Every accepted (published) event ends up in exactly one of
/// Inserted, pending (memory, held or spool) or Quarantined; Refused events were never accepted.
/// </summary>
public sealed record EventSinkStats(
    long Published,
    long Inserted,
    long Spooled,
    long Spilled,
    long Replayed,
    long Quarantined,
    long Batches,
    long InsertFailures,
    int SpoolFiles,
    bool StoreHealthy,
    TimeSpan Lag)
{
    /// <summary>Events <see cref="IEventPublisher.Publish"/> returned false for (memory full and the disk refusing, malformed, or after disposal).</summary>
    public long Refused { get; init; }

    /// <summary>Spool writes the disk refused (each retried).</summary>
    public long SpoolFailures { get; init; }

    /// <summary>Events in batches that neither the store nor the disk took yet, kept in memory.</summary>
    public long Held { get; init; }

    /// <summary>Events kept from spill segments a crash left open.</summary>
    public long Recovered { get; init; }

    /// <summary>Files set aside in the spool's quarantine folder by this sink (unreadable batches, torn tails).</summary>
    public int QuarantinedFiles { get; init; }

    /// <summary>Errors the loop caught and survived (it backs off and goes on).</summary>
    public long LoopErrors { get; init; }

    /// <summary>Events appended to a batch's journal because a caller waited for them to outlive the process.</summary>
    public long Journaled { get; init; }

    /// <summary>Waits for durability that ran out of time (the reply went out anyway; the events went on as usual).</summary>
    public long DurableTimeouts { get; init; }

    public EventSinkHealth Health { get; init; }

    /// <summary>The last failure, in words; null while healthy.</summary>
    public string? LastError { get; init; }
}
