namespace Analytics.Events;

/// <summary>Counters of the sink since it started; every published event ends up in exactly one of
/// Inserted, Pending (memory or spool) or Quarantined.</summary>
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
    TimeSpan Lag);
