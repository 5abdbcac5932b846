namespace Analytics.Limits;

/// <summary>
/// Failures (or unknown recipients) of one entity in a sliding window; reaching the threshold locks
/// the entity, each further lock twice as long as the previous one up to a maximum, and the doubling
/// forgets itself after a quiet window past the last lock. Reads (<see cref="IsLocked"/>) are
/// lock-free; recording takes the entry's own lock.
/// </summary>
internal sealed class FailureCounter
{
    private readonly Queue<long> _failures = new();
    private long _lockedUntil;
    private long _lastLockEnd;
    private long _last;
    private int _level;

    public bool IsLocked(long now) => now < Volatile.Read(ref _lockedUntil);

    /// <summary>Nothing in the window, no lock, no back-off to remember: safe to forget.</summary>
    public bool IsStale(long now, long window) => now - Volatile.Read(ref _last) > window && now - Volatile.Read(ref _lastLockEnd) > window;

    /// <summary>Records one failure at <paramref name="now"/>; returns the lock it set (zero when none).</summary>
    public TimeSpan Record(long now, int threshold, TimeSpan windowSpan, TimeSpan lockBase, TimeSpan lockMax, long frequency)
    {
        lock (_failures)
        {
            Volatile.Write(ref _last, now);
            var window = Ticks(windowSpan, frequency);
            while (_failures.Count > 0 && now - _failures.Peek() > window)
            {
                _failures.Dequeue();
            }

            _failures.Enqueue(now);
            if (_failures.Count < threshold)
            {
                return TimeSpan.Zero;
            }

            if (_lastLockEnd != 0 && now - _lastLockEnd > window)
            {
                _level = 0;
            }

            var duration = TimeSpan.FromTicks(Math.Min(lockBase.Ticks * (1L << Math.Min(_level, 20)), lockMax.Ticks));
            _level++;
            _failures.Clear();
            var until = now + Ticks(duration, frequency);
            Volatile.Write(ref _lastLockEnd, until);
            Volatile.Write(ref _lockedUntil, until);
            return duration;
        }
    }

    public void ClearFailures()
    {
        lock (_failures)
        {
            _failures.Clear();
        }
    }

    internal static long Ticks(TimeSpan span, long frequency) => (long)(span.TotalSeconds * frequency);
}
