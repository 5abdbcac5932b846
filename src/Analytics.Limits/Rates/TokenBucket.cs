namespace Analytics.Limits;

/// <summary>
/// The one rate primitive every book uses: a token bucket holding one period's allowance (at least one
/// token), refilled continuously. Locks only itself and allocates nothing per check; the caller reads
/// the clock once and passes the timestamp in.
/// </summary>
internal sealed class TokenBucket
{
    private readonly Lock _gate = new();
    private double _tokens = double.NaN;
    private long _stamp;

    /// <summary>Takes one token when there is one.</summary>
    /// <param name="perPeriod">Allowance per <paramref name="period"/>; also the bucket's capacity (burst).</param>
    /// <param name="now">A <see cref="TimeProvider.GetTimestamp"/> value.</param>
    /// <param name="frequency">The provider's <see cref="TimeProvider.TimestampFrequency"/>.</param>
    public bool TryTake(double perPeriod, TimeSpan period, long now, long frequency)
    {
        lock (_gate)
        {
            var capacity = Math.Max(1, perPeriod);
            _tokens = double.IsNaN(_tokens)
                ? capacity
                : Math.Min(capacity, _tokens + ((now - _stamp) / (double)frequency * perPeriod / period.TotalSeconds));
            _stamp = now;
            if (_tokens < 1)
            {
                return false;
            }

            _tokens -= 1;
            return true;
        }
    }

    /// <summary>Whether the bucket is full again at <paramref name="now"/>: it holds no state worth keeping.</summary>
    public bool IsIdle(double perPeriod, TimeSpan period, long now, long frequency)
    {
        lock (_gate)
        {
            return double.IsNaN(_tokens) || _tokens + ((now - _stamp) / (double)frequency * perPeriod / period.TotalSeconds) >= Math.Max(1, perPeriod);
        }
    }
}
