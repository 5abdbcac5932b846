using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace Analytics.Limits;

/// <summary>
/// Runs the policy: holds every entity's standing, applies <see cref="LimitRules"/> to verdicts,
/// overrides and expiry, publishes the result to the <see cref="LimitBook"/> at once, and records every
/// change through <see cref="LimitRecords"/> in the background (retried until the store takes it;
/// the book enforces the change meanwhile). Other nodes' changes come in through <see cref="PullAsync"/>.
/// </summary>
public sealed partial class LimitPolicy : IVerdictListener, ILimitControl, IAsyncDisposable
{
    private readonly LimitRecords _records;
    private readonly LimitBook _book;
    private readonly LimitRules _rules;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<EntityRef, EntityLimit> _limits = [];
    private readonly Dictionary<EntityRef, int> _strikes = [];
    private readonly Channel<EntityLimit> _writes = Channel.CreateUnbounded<EntityLimit>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;
    private ulong _lastPulled;
    private ulong _versionClock;
    private long _pending;

    public LimitPolicy(LimitRecords records, LimitBook book, DynamicLimitOptions options, TimeProvider time, ILogger logger)
    {
        _records = records;
        _book = book;
        _rules = new LimitRules(options);
        _time = time;
        _logger = logger;
        _writer = Task.Run(WriteLoopAsync);
    }

    public LimitBook Book => _book;

    /// <summary>Loads the limits recorded since the last pull (at start, and on every pull from other nodes).</summary>
    public async Task<int> PullAsync(CancellationToken cancellationToken = default)
    {
        ulong since;
        lock (_gate)
        {
            since = _lastPulled;
        }

        var pulled = new List<EntityLimit>();
        await foreach (var limit in _records.ReadSinceAsync(since, cancellationToken))
        {
            pulled.Add(limit);
        }

        var applied = 0;
        lock (_gate)
        {
            foreach (var limit in pulled)
            {
                _lastPulled = Math.Max(_lastPulled, limit.Version);
                ObserveVersion(limit.Version);
                if (_limits.TryGetValue(limit.Entity, out var mine) && mine.Version >= limit.Version)
                {
                    continue;
                }

                Set(limit);
                applied++;
            }

            if (applied > 0)
            {
                Publish();
            }
        }

        return applied;
    }

    public EntityLimit Current(EntityRef entity)
    {
        lock (_gate)
        {
            return _limits.TryGetValue(entity, out var limit) ? limit : LimitRules.Normal(entity, "", "", _time.GetUtcNow().UtcDateTime);
        }
    }

    public IReadOnlyList<EntityLimit> All()
    {
        lock (_gate)
        {
            return [.. _limits.Values.OrderBy(l => l.Entity.Kind).ThenBy(l => l.Entity.Name, StringComparer.Ordinal)];
        }
    }

    public Task<IReadOnlyList<EntityLimit>> HistoryAsync(EntityRef entity, int max = 50, CancellationToken cancellationToken = default) =>
        _records.HistoryAsync(entity, max, cancellationToken);

    public async Task<EntityLimit> ApplyAsync(LimitOverride change, CancellationToken cancellationToken = default)
    {
        if (string.IsNullOrWhiteSpace(change.Reason))
        {
            throw new ArgumentException("A reason is required.", nameof(change));
        }

        var now = _time.GetUtcNow().UtcDateTime;
        EntityLimit limit;
        lock (_gate)
        {
            limit = Stamp(LimitRules.FromOverride(change, now), now);
            if (change.Kind == OverrideKind.Release)
            {
                _strikes.Remove(change.Entity);
            }

            Set(limit);
            Publish();
        }

        await _records.WriteAsync([limit], cancellationToken);
        LogOverride(_logger, change.Actor, change.Kind.ToString(), change.Entity.ToString(), change.Reason);
        return limit;
    }

    /// <summary>Verdicts from a scoring pass (in-process). Applies them and the decay of expired limits.</summary>
    public void OnVerdicts(IReadOnlyList<Verdict> verdicts)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var changed = new List<EntityLimit>();
        lock (_gate)
        {
            foreach (var verdict in verdicts)
            {
                var standing = new EntityStanding(_limits.GetValueOrDefault(verdict.Entity), _strikes.GetValueOrDefault(verdict.Entity));
                if (_rules.OnVerdict(verdict, standing, now) is not { } change)
                {
                    continue;
                }

                if (!change.Recorded)
                {
                    _limits[verdict.Entity] = change.Limit;
                    continue;
                }

                if (change.Strike)
                {
                    _strikes[verdict.Entity] = standing.Strikes + 1;
                }

                var limit = Stamp(change.Limit, now);
                Set(limit);
                changed.Add(limit);
            }

            changed.AddRange(DecayLocked(now));
            if (changed.Count > 0)
            {
                Publish();
            }
        }

        Record(changed);
        foreach (var limit in changed)
        {
            LogChange(_logger, limit.Entity.ToString(), limit.Level.ToString(), limit.Reason);
        }
    }

    /// <summary>Steps expired limits down a level; returns what changed.</summary>
    public IReadOnlyList<EntityLimit> Decay()
    {
        List<EntityLimit> changed;
        lock (_gate)
        {
            changed = DecayLocked(_time.GetUtcNow().UtcDateTime);
            if (changed.Count > 0)
            {
                Publish();
            }
        }

        Record(changed);
        return changed;
    }

    /// <summary>Waits until every change so far is recorded in the store.</summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        while (Interlocked.Read(ref _pending) > 0)
        {
            await Task.Delay(10, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _writes.Writer.TryComplete();
        await _writer;
    }

    private List<EntityLimit> DecayLocked(DateTime now)
    {
        var changed = new List<EntityLimit>();
        foreach (var limit in _limits.Values.ToList())
        {
            if (_rules.Decay(limit, now) is { } next)
            {
                var stamped = Stamp(next, now);
                Set(stamped);
                changed.Add(stamped);
            }
        }

        return changed;
    }

    private EntityLimit Stamp(EntityLimit limit, DateTime now) => limit with { Version = NextVersion(now) };

    // Versions are the change time in ticks, strictly increasing on this node.
    private ulong NextVersion(DateTime now)
    {
        while (true)
        {
            var last = Interlocked.Read(ref _versionClock);
            var next = Math.Max(last + 1, (ulong)now.Ticks);
            if (Interlocked.CompareExchange(ref _versionClock, next, last) == last)
            {
                return next;
            }
        }
    }

    // Lamport-style: a change made here after seeing another node's change always sorts after it.
    private void ObserveVersion(ulong seen)
    {
        while (true)
        {
            var last = Interlocked.Read(ref _versionClock);
            if (last >= seen || Interlocked.CompareExchange(ref _versionClock, seen, last) == last)
            {
                return;
            }
        }
    }

    private void Set(EntityLimit limit)
    {
        if (limit.IsNormal && limit.Source != LimitSource.Override)
        {
            _limits.Remove(limit.Entity);
        }
        else
        {
            _limits[limit.Entity] = limit;
        }
    }

    private void Publish() => _book.Replace(_limits.Values);

    private void Record(List<EntityLimit> changed)
    {
        foreach (var limit in changed)
        {
            Interlocked.Increment(ref _pending);
            _writes.Writer.TryWrite(limit);
        }
    }

    private async Task WriteLoopAsync()
    {
        var batch = new List<EntityLimit>();
        var backoff = TimeSpan.FromSeconds(1);
        while (await _writes.Reader.WaitToReadAsync())
        {
            while (batch.Count < LimitRecords.BatchSize * 10 && _writes.Reader.TryRead(out var limit))
            {
                batch.Add(limit);
            }

            try
            {
                await _records.WriteAsync(batch, CancellationToken.None);
            }
            catch (Exception ex)
            {
                // The book already enforces the changes; the records are retried, with backoff, until the store takes them.
                LogWriteFailed(_logger, ex, batch.Count);
                await Task.Delay(backoff);
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
                continue;
            }

            backoff = TimeSpan.FromSeconds(1);
            Interlocked.Add(ref _pending, -batch.Count);
            batch.Clear();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Limit {Entity} → {Level}: {Reason}")]
    private static partial void LogChange(ILogger logger, string entity, string level, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Actor} applied {Kind} to {Entity}: {Reason}")]
    private static partial void LogOverride(ILogger logger, string actor, string kind, string entity, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not record {Count} limit changes; retrying")]
    private static partial void LogWriteFailed(ILogger logger, Exception exception, int count);
}
