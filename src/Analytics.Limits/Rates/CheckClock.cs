namespace Analytics.Limits;

/// <summary>
/// The clock of one limit check: read at most once, and only when something in the check needs the
/// time (a rate to take from, a lock or hold that may still be running). A timestamp costs 40–90 ns on
/// the virtual machines measured here, as much as the rest of a check; most checks need none.
/// </summary>
internal struct CheckClock(TimeProvider time)
{
    private long _now = long.MinValue;

    /// <summary>A clock already read (by a caller that needed the time anyway).</summary>
    public CheckClock(TimeProvider time, long now)
        : this(time) => _now = now;

    /// <summary>A <see cref="TimeProvider.GetTimestamp"/> value, the same for the whole check.</summary>
    public long Now => _now != long.MinValue ? _now : _now = time.GetTimestamp();
}
