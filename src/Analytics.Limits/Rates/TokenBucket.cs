namespace Analytics.Limits;

/// <summary>
/// The one rate primitive every book uses: a token bucket holding one period's allowance (at least one
/// token), refilled continuously, starting full. Kept as the generic cell rate algorithm's single
/// number — the time at which the bucket is full again ("theoretical arrival time") — so a take is one
/// compare-and-swap: no lock, no allocation. The caller reads the clock once and passes the timestamp in.
/// </summary>
internal sealed class TokenBucket
{
    // When the bucket is full again, in timestamp ticks, as the bits of a double (a token is a fraction
    // of a tick at high rates); 0 (= 0.0): full since ever.
    private long _full;

    /// <summary>Takes one token when there is one.</summary>
    /// <param name="perPeriod">Allowance per <paramref name="period"/>; also the bucket's capacity (burst).</param>
    /// <param name="now">A <see cref="TimeProvider.GetTimestamp"/> value.</param>
    /// <param name="frequency">The provider's <see cref="TimeProvider.TimestampFrequency"/>.</param>
    public bool TryTake(double perPeriod, TimeSpan period, long now, long frequency)
    {
        // Ticks one token takes to come back; the bucket holds capacity × that when full. There is a
        // token when taking one leaves the bucket no more than a full bucket's time from full.
        var interval = period.TotalSeconds * frequency / perPeriod;
        if (!double.IsFinite(interval) || interval <= 0)
        {
            // No refill (a rate of 0): the one token of a full bucket, then none.
            var full = Volatile.Read(ref _full);
            return BitConverter.Int64BitsToDouble(full) <= now
                && Interlocked.CompareExchange(ref _full, BitConverter.DoubleToInt64Bits(double.PositiveInfinity), full) == full;
        }

        var horizon = now + Math.Max(1, perPeriod) * interval;
        while (true)
        {
            var seen = Volatile.Read(ref _full);
            var next = Math.Max(BitConverter.Int64BitsToDouble(seen), now) + interval;
            if (next > horizon)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _full, BitConverter.DoubleToInt64Bits(next), seen) == seen)
            {
                return true;
            }
        }
    }

    /// <summary>Whether the bucket is full again at <paramref name="now"/>: it holds no state worth keeping.</summary>
    public bool IsIdle(long now) => BitConverter.Int64BitsToDouble(Volatile.Read(ref _full)) <= now;
}
