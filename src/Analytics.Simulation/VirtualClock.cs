namespace Analytics.Simulation;

/// <summary>Simulated time, set by whoever plays the sessions; timestamps count 100 ns ticks of that time.</summary>
internal sealed class VirtualClock : TimeProvider
{
    private DateTimeOffset _now;

    public VirtualClock(DateTimeOffset start) => _now = start;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override DateTimeOffset GetUtcNow() => _now;

    public override long GetTimestamp() => _now.UtcTicks;

    public void Set(DateTimeOffset now) => _now = now;
}
