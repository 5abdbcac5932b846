using System.ComponentModel.DataAnnotations;

namespace Analytics.Limits;

/// <summary>How verdicts become limits (section <c>Limits</c>).</summary>
public sealed class LimitPolicyOptions
{
    /// <summary>A flagged verdict at or above this score throttles. Default 0.5.</summary>
    [Range(0.0, 1.0)]
    public double ThrottleScore { get; set; } = 0.5;

    /// <summary>At or above this score (or a repeat offence), block. Default 0.85.</summary>
    [Range(0.0, 1.0)]
    public double BlockScore { get; set; } = 0.85;

    /// <summary>How long a throttle holds without a new flag before stepping down. Default 15 min.</summary>
    [Range(typeof(TimeSpan), "00:00:10", "7.00:00:00")]
    public TimeSpan ThrottleHold { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>How long a block holds without a new flag before stepping down to throttle. Default 1 h.</summary>
    [Range(typeof(TimeSpan), "00:00:10", "30.00:00:00")]
    public TimeSpan BlockHold { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How long an entity stays watched after its last limit. Default 1 h.</summary>
    [Range(typeof(TimeSpan), "00:00:10", "30.00:00:00")]
    public TimeSpan WatchHold { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How often other nodes' changes are pulled from the limits table. Default 2 s.</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:10:00")]
    public TimeSpan PullInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Name written with each change. Default: the machine name.</summary>
    public string Node { get; set; } = Environment.MachineName;
}
