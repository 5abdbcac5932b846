namespace Analytics.Limits;

/// <summary>
/// Bad and good outcomes of one entity in a sliding window (AUTH failures and successes, unknown and
/// known recipients), and how much mail it delivered lately (a count that halves every
/// <c>halfLife</c>): its history. Reaching a threshold of bad outcomes that are also a large enough
/// share of all outcomes — history counting as good ones, up to a credit — locks the entity, each
/// further lock twice as long as the previous one up to a maximum; the doubling forgets itself after
/// a quiet window past the last lock. The window is kept as ten buckets, so it slides in tenths.
/// Reads (<see cref="IsLocked"/>) are lock-free; recording takes the entry's own lock.
/// </summary>
internal sealed class RatioCounter
{
    private const int Buckets = 10;

    private readonly long[] _bucket = new long[Buckets];
    private readonly int[] _bad = new int[Buckets];
    private readonly int[] _good = new int[Buckets];
    private long _lockedUntil;
    private long _lastLockEnd;
    private long _last;
    private int _level;
    private double _history;
    private long _historyAt;

    public bool IsLocked(long now) => now < Volatile.Read(ref _lockedUntil);

    /// <summary>Nothing in the window, no lock, no back-off to remember, no history worth keeping: safe to forget.</summary>
    public bool IsStale(long now, long window, long halfLife)
    {
        if (now - Volatile.Read(ref _last) <= window || now - Volatile.Read(ref _lastLockEnd) <= window)
        {
            return false;
        }

        lock (_bucket)
        {
            return Decayed(now, halfLife) < 1;
        }
    }

    /// <summary>A good outcome (a successful AUTH, a known recipient).</summary>
    public void Good(long now, long window)
    {
        lock (_bucket)
        {
            _good[Slot(now, window)]++;
            Volatile.Write(ref _last, now);
        }
    }

    /// <summary>Mail delivered to <paramref name="recipients"/> recipients: history that vouches for the entity.</summary>
    public void Delivered(long now, int recipients, long halfLife)
    {
        lock (_bucket)
        {
            _history = Decayed(now, halfLife) + recipients;
            _historyAt = now;
            Volatile.Write(ref _last, now);
        }
    }

    /// <summary>Recipients delivered lately, as the history counts them now.</summary>
    public double History(long now, long halfLife)
    {
        lock (_bucket)
        {
            return Decayed(now, halfLife);
        }
    }

    /// <summary>
    /// Records one bad outcome at <paramref name="now"/>; returns the lock it set (zero when none). A lock
    /// needs <paramref name="threshold"/> bad outcomes in the window that are at least
    /// <paramref name="share"/> of bad + good + history (history counted up to <paramref name="credit"/>).
    /// </summary>
    public TimeSpan Bad(long now, in RatioRule rule, long frequency)
    {
        var window = Ticks(rule.Window, frequency);
        lock (_bucket)
        {
            Volatile.Write(ref _last, now);
            _bad[Slot(now, window)]++;
            var (bad, good) = Sums(now, window);
            var vouched = Math.Min(Decayed(now, Ticks(rule.HistoryHalfLife, frequency)), rule.HistoryCredit);
            if (bad < rule.Threshold || bad < rule.Share * (bad + good + vouched))
            {
                return TimeSpan.Zero;
            }

            if (_lastLockEnd != 0 && now - _lastLockEnd > window)
            {
                _level = 0;
            }

            var duration = TimeSpan.FromTicks(Math.Min(rule.LockBase.Ticks * (1L << Math.Min(_level, 20)), rule.LockMax.Ticks));
            _level++;
            Array.Clear(_bad);
            Array.Clear(_good);
            var until = now + Ticks(duration, frequency);
            Volatile.Write(ref _lastLockEnd, until);
            Volatile.Write(ref _lockedUntil, until);
            return duration;
        }
    }

    /// <summary>Bad and good outcomes in the window (for tests and inspection).</summary>
    public (int Bad, int Good) Counts(long now, long window)
    {
        lock (_bucket)
        {
            return Sums(now, window);
        }
    }

    private int Slot(long now, long window)
    {
        var width = Math.Max(1, window / Buckets);
        var bucket = now / width;
        var slot = (int)(bucket % Buckets);
        if (_bucket[slot] != bucket)
        {
            _bucket[slot] = bucket;
            _bad[slot] = 0;
            _good[slot] = 0;
        }

        return slot;
    }

    private (int Bad, int Good) Sums(long now, long window)
    {
        var width = Math.Max(1, window / Buckets);
        var current = now / width;
        int bad = 0, good = 0;
        for (var i = 0; i < Buckets; i++)
        {
            if (current - _bucket[i] < Buckets)
            {
                bad += _bad[i];
                good += _good[i];
            }
        }

        return (bad, good);
    }

    private double Decayed(long now, long halfLife) =>
        _history <= 0 || halfLife <= 0 ? 0 : _history * Math.Pow(0.5, (now - _historyAt) / (double)halfLife);

    internal static long Ticks(TimeSpan span, long frequency) => (long)(span.TotalSeconds * frequency);
}

/// <summary>When bad outcomes lock an entity: how many, what share, over which window, and for how long.</summary>
internal readonly record struct RatioRule(int Threshold, double Share, TimeSpan Window, TimeSpan LockBase, TimeSpan LockMax, double HistoryCredit, TimeSpan HistoryHalfLife);
