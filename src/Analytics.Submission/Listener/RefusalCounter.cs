using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Analytics.Submission.Listener;

/// <summary>
/// Connections refused before the greeting, counted by reason (for /metrics) and summed up in one log
/// line at most every <see cref="Interval"/>, whatever the rate: an attacker opening thousands of
/// connections a second gets a counter, not thousands of log lines.
/// </summary>
internal sealed partial class RefusalCounter
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private readonly ConcurrentDictionary<string, long> _total = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _sinceLog = new(StringComparer.Ordinal);
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private long _lastLog;

    public RefusalCounter(TimeProvider time, ILogger logger)
    {
        _time = time;
        _logger = logger;
        _lastLog = time.GetTimestamp();
    }

    /// <summary>Refusals since start, by reason.</summary>
    public IReadOnlyDictionary<string, long> Totals => _total;

    public void Count(string reason)
    {
        // Reasons are ours (a gate's or a limit's), but a limit's reason can name an entity: keep the
        // map bounded by grouping what follows a colon.
        var key = reason.Split(':', 2)[0];
        if (_total.Count < 1000 || _total.ContainsKey(key))
        {
            _total.AddOrUpdate(key, 1, static (_, n) => n + 1);
            _sinceLog.AddOrUpdate(key, 1, static (_, n) => n + 1);
        }

        var now = _time.GetTimestamp();
        var last = Interlocked.Read(ref _lastLog);
        if (_time.GetElapsedTime(last, now) >= Interval && Interlocked.CompareExchange(ref _lastLog, now, last) == last)
        {
            var summary = string.Join(", ", _sinceLog.Keys.ToList().Select(k => _sinceLog.TryRemove(k, out var n) ? $"{n} {k}" : null).OfType<string>());
            LogRefused(_logger, summary, _time.GetElapsedTime(last, now).TotalSeconds);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Connections refused before the greeting in the last {Seconds:0} s: {Summary}")]
    private static partial void LogRefused(ILogger logger, string summary, double seconds);
}
