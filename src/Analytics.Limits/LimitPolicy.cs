using System.Globalization;
using System.Threading.Channels;
using Analytics.Detection.Model;
using Analytics.Detection.Scoring;
using Analytics.Store;
using Microsoft.Extensions.Logging;

namespace Analytics.Limits;

/// <summary>
/// Turns verdicts into limits and applies reviewers' overrides. Escalation is immediate; coming back
/// down is not: a limit holds until its expiry and then steps down one level at a time (block →
/// throttle → watch → normal), renewed by every new flag, so a bot pausing between bursts does not
/// flap in and out. An entity limited before steps straight to block. Overrides always win until
/// they expire or are released. Every change is recorded with its reason and pushed to the limit
/// book at once; other nodes get it from the limits table.
/// </summary>
public sealed partial class LimitPolicy : IVerdictListener, ILimitControl, IAsyncDisposable
{
    private const string Columns = "entity_kind, entity, level, source, messages_per_minute, recipients_per_hour, distinct_recipients_per_hour, recipients_per_message, auth_locked, tarpit_ms, blocked, reason, set_by, set_at, expires_at, version";

    private readonly IClickHouseStore _store;
    private readonly DynamicLimitBook _book;
    private readonly LimitPolicyOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<EntityRef, EntityLimit> _limits = [];
    private readonly Dictionary<EntityRef, int> _strikes = [];
    private readonly Channel<EntityLimit> _writes = Channel.CreateUnbounded<EntityLimit>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;
    private ulong _lastVersion;

    public LimitPolicy(IClickHouseStore store, DynamicLimitBook book, LimitPolicyOptions options, TimeProvider time, ILogger logger)
    {
        _store = store;
        _book = book;
        _options = options;
        _time = time;
        _logger = logger;
        _writer = Task.Run(WriteLoopAsync);
    }

    public DynamicLimitBook Book => _book;

    /// <summary>Loads the limits in force from the store (at start, and on every pull from other nodes).</summary>
    public async Task<int> PullAsync(CancellationToken cancellationToken = default)
    {
        ulong since;
        lock (_gate)
        {
            since = _lastVersion;
        }

        var rows = await _store.QueryAsync(
            $"SELECT {Columns} FROM limits FINAL WHERE version > {{v:UInt64}} ORDER BY version", QueryParameters.Of(("v", since)), cancellationToken);
        var applied = 0;
        lock (_gate)
        {
            foreach (var row in rows.Rows)
            {
                var limit = FromRow(row);
                _lastVersion = Math.Max(_lastVersion, limit.Version);
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
            return _limits.TryGetValue(entity, out var limit) ? limit : Normal(entity, "", "", _time.GetUtcNow().UtcDateTime);
        }
    }

    public IReadOnlyList<EntityLimit> All()
    {
        lock (_gate)
        {
            return [.. _limits.Values.OrderBy(l => l.Entity.Kind, StringComparer.Ordinal).ThenBy(l => l.Entity.Name, StringComparer.Ordinal)];
        }
    }

    public async Task<IReadOnlyList<EntityLimit>> HistoryAsync(EntityRef entity, int max = 50, CancellationToken cancellationToken = default)
    {
        var rows = await _store.QueryAsync(
            $"SELECT {Columns} FROM limit_changes WHERE entity_kind = {{k:String}} AND entity = {{e:String}} ORDER BY version DESC LIMIT {{n:UInt32}}",
            QueryParameters.Of(("k", entity.Kind), ("e", entity.Name), ("n", max)), cancellationToken);
        return rows.Rows.Select(FromRow).ToList();
    }

    public async Task<EntityLimit> ApplyAsync(LimitOverride change, CancellationToken cancellationToken = default)
    {
        if (string.IsNullOrWhiteSpace(change.Reason))
        {
            throw new ArgumentException("A reason is required.", nameof(change));
        }

        var now = _time.GetUtcNow().UtcDateTime;
        var limit = change.Kind switch
        {
            OverrideKind.Release => Normal(change.Entity, change.Reason, change.Actor, now),
            OverrideKind.Allow => Normal(change.Entity, change.Reason, change.Actor, now) with
            {
                Source = LimitSource.Override,
                Level = LimitLevel.Normal,
                ExpiresAt = change.ExpiresAt,
            },
            OverrideKind.Block => Normal(change.Entity, change.Reason, change.Actor, now) with
            {
                Source = LimitSource.Override,
                Level = LimitLevel.Block,
                Blocked = true,
                AuthLocked = true,
                ExpiresAt = change.ExpiresAt,
            },
            _ => Normal(change.Entity, change.Reason, change.Actor, now) with
            {
                Source = LimitSource.Override,
                Level = LimitLevel.Throttle,
                MessagesPerMinute = change.MessagesPerMinute,
                RecipientsPerHour = change.RecipientsPerHour,
                RecipientsPerMessage = change.RecipientsPerMessage,
                Tarpit = change.Tarpit ?? TimeSpan.Zero,
                ExpiresAt = change.ExpiresAt,
            },
        };

        lock (_gate)
        {
            if (change.Kind == OverrideKind.Release)
            {
                _strikes.Remove(change.Entity);
            }

            Set(limit);
            Publish();
        }

        await WriteAsync([limit], cancellationToken);
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
                if (!verdict.Flagged || !EntityKinds.IsValid(verdict.EntityKind))
                {
                    continue;
                }

                var entity = new EntityRef(verdict.EntityKind, verdict.Entity);
                var current = _limits.GetValueOrDefault(entity);
                if (current is { Source: LimitSource.Override } && (current.ExpiresAt is null || current.ExpiresAt > now))
                {
                    continue;
                }

                var level = verdict.Score >= _options.BlockScore ? LimitLevel.Block
                    : verdict.Score >= _options.ThrottleScore ? LimitLevel.Throttle
                    : LimitLevel.Watch;
                if (level == LimitLevel.Throttle && _strikes.GetValueOrDefault(entity) > 0 && (current is null || current.Level < LimitLevel.Throttle))
                {
                    // Limited before, and back at it: no second grace period.
                    level = LimitLevel.Block;
                }

                if (current is not null && current.Level > level)
                {
                    // Never step down on a weaker verdict: only expiry lowers a limit.
                    continue;
                }

                var reason = $"{verdict.Class} {verdict.Score.ToString("0.00", CultureInfo.InvariantCulture)}: {verdict.Explanation}";
                if (current is not null && current.Level == level)
                {
                    // Same level: the hold is renewed in memory; the record keeps the reason it was set for.
                    _limits[entity] = current with { ExpiresAt = now + Hold(level) };
                    continue;
                }

                var limit = Build(entity, verdict.Class, level, now, reason, verdict.ModelVersion);
                if (level >= LimitLevel.Throttle && (current is null || current.Level < LimitLevel.Throttle))
                {
                    _strikes[entity] = _strikes.GetValueOrDefault(entity) + 1;
                }

                Set(limit);
                changed.Add(limit);
            }

            changed.AddRange(DecayLocked(now));
            if (changed.Count > 0)
            {
                Publish();
            }
        }

        foreach (var limit in changed)
        {
            Interlocked.Increment(ref _pending);
            _writes.Writer.TryWrite(limit);
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

        foreach (var limit in changed)
        {
            Interlocked.Increment(ref _pending);
            _writes.Writer.TryWrite(limit);
        }

        return changed;
    }

    private List<EntityLimit> DecayLocked(DateTime now)
    {
        var changed = new List<EntityLimit>();
        foreach (var limit in _limits.Values.ToList())
        {
            if (limit.ExpiresAt is not { } expires || expires > now)
            {
                continue;
            }

            var cls = ClassOf(limit.Reason);
            var next = limit.Source == LimitSource.Override
                ? Normal(limit.Entity, "override expired", limit.SetBy, now)
                : limit.Level switch
                {
                    LimitLevel.Block => Build(limit.Entity, cls, LimitLevel.Throttle, now, "decay: " + limit.Reason, limit.SetBy),
                    LimitLevel.Throttle => Build(limit.Entity, cls, LimitLevel.Watch, now, "decay: " + limit.Reason, limit.SetBy),
                    _ => Normal(limit.Entity, "decay: back to normal", limit.SetBy, now),
                };
            Set(next);
            changed.Add(next);
        }

        return changed;
    }

    private static string ClassOf(string reason)
    {
        var text = reason.StartsWith("decay: ", StringComparison.Ordinal) ? reason[7..] : reason;
        var space = text.IndexOf(' ', StringComparison.Ordinal);
        return space > 0 ? text[..space] : text;
    }

    private TimeSpan Hold(LimitLevel level) => level switch
    {
        LimitLevel.Block => _options.BlockHold,
        LimitLevel.Throttle => _options.ThrottleHold,
        _ => _options.WatchHold,
    };

    /// <summary>The limits for a class at a level, per kind of entity (see the README's policy table).</summary>
    internal EntityLimit Build(EntityRef entity, string cls, LimitLevel level, DateTime now, string reason, string setBy)
    {
        var limit = Normal(entity, reason, setBy, now) with { Level = level, Source = setBy == "rules" ? LimitSource.Rules : LimitSource.Model, ExpiresAt = now + Hold(level) };
        if (level == LimitLevel.Watch)
        {
            return limit;
        }

        var block = level == LimitLevel.Block;
        var host = entity.Kind != EntityKinds.User;
        return cls switch
        {
            ThreatClass.Harvester when host => limit with { Blocked = block, RecipientsPerHour = block ? null : 20, Tarpit = TimeSpan.FromSeconds(block ? 5 : 3) },
            ThreatClass.Harvester => limit with { Blocked = block, RecipientsPerHour = 30, RecipientsPerMessage = 10, Tarpit = TimeSpan.FromSeconds(2) },

            // An account under attack is a victim: slow AUTH against it, never lock its owner out.
            ThreatClass.BruteForce when host => limit with { AuthLocked = true, Blocked = block, Tarpit = TimeSpan.FromSeconds(block ? 5 : 3) },
            ThreatClass.BruteForce => limit with { Tarpit = TimeSpan.FromSeconds(2) },

            ThreatClass.Compromised => limit with { Blocked = block, MessagesPerMinute = 1, RecipientsPerHour = 20, RecipientsPerMessage = 5, Tarpit = TimeSpan.FromSeconds(2) },
            _ => limit with { Tarpit = TimeSpan.FromSeconds(1) },
        };
    }

    private EntityLimit Normal(EntityRef entity, string reason, string setBy, DateTime now) => new()
    {
        Entity = entity,
        Level = LimitLevel.Normal,
        Source = LimitSource.Default,
        Reason = reason,
        SetBy = setBy,
        SetAt = now,
        Version = NextVersion(now),
    };

    private ulong _versionClock;

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

    /// <summary>Waits until every change so far is recorded in the store.</summary>
    public async Task FlushAsync(CancellationToken cancellationToken = default)
    {
        while (Interlocked.Read(ref _pending) > 0)
        {
            await Task.Delay(10, cancellationToken);
        }
    }

    private long _pending;

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

    private async Task WriteLoopAsync()
    {
        var batch = new List<EntityLimit>();
        while (await _writes.Reader.WaitToReadAsync())
        {
            while (_writes.Reader.TryRead(out var limit))
            {
                batch.Add(limit);
            }

            try
            {
                await WriteAsync(batch, CancellationToken.None);
            }
            catch (Exception ex)
            {
                // The book already enforces the change; the record will be retried with the next batch.
                LogWriteFailed(_logger, ex, batch.Count);
                await Task.Delay(1000);
                continue;
            }

            Interlocked.Add(ref _pending, -batch.Count);
            batch.Clear();
        }
    }

    private async Task WriteAsync(IReadOnlyList<EntityLimit> limits, CancellationToken cancellationToken)
    {
        if (limits.Count == 0)
        {
            return;
        }

        foreach (var table in new[] { "limits", "limit_changes" })
        {
            var node = table == "limit_changes";
            var values = string.Join(", ", limits.Select((_, i) => Placeholders(i, node)));
            var parameters = new QueryParameters();
            for (var i = 0; i < limits.Count; i++)
            {
                Bind(parameters, i, limits[i]);
            }

            parameters["node"] = _options.Node;
            await _store.ExecuteAsync($"INSERT INTO {table} ({Columns}{(node ? ", node" : "")}) VALUES {values}", parameters, cancellationToken);
        }
    }

    private static string Placeholders(int i, bool node) => string.Create(CultureInfo.InvariantCulture,
        $"({{k{i}:String}}, {{e{i}:String}}, {{l{i}:String}}, {{s{i}:String}}, {{m{i}:Nullable(Float64)}}, {{r{i}:Nullable(Float64)}}, {{d{i}:Nullable(Float64)}}, {{p{i}:Nullable(Int32)}}, {{a{i}:Bool}}, {{t{i}:UInt32}}, {{b{i}:Bool}}, {{why{i}:String}}, {{by{i}:String}}, {{at{i}:DateTime64(3)}}, {{x{i}:Nullable(DateTime64(3))}}, {{v{i}:UInt64}}{(node ? ", {node:String}" : "")})");

    private static void Bind(QueryParameters p, int i, EntityLimit l)
    {
        string N(string name) => name + i.ToString(CultureInfo.InvariantCulture);
        p[N("k")] = l.Entity.Kind;
        p[N("e")] = l.Entity.Name;
        p[N("l")] = l.Level.ToString().ToLowerInvariant();
        p[N("s")] = l.Source.ToString().ToLowerInvariant();
        p[N("m")] = l.MessagesPerMinute;
        p[N("r")] = l.RecipientsPerHour;
        p[N("d")] = l.DistinctRecipientsPerHour;
        p[N("p")] = l.RecipientsPerMessage;
        p[N("a")] = l.AuthLocked;
        p[N("t")] = (uint)l.Tarpit.TotalMilliseconds;
        p[N("b")] = l.Blocked;
        p[N("why")] = l.Reason;
        p[N("by")] = l.SetBy;
        p[N("at")] = l.SetAt;
        p[N("x")] = l.ExpiresAt;
        p[N("v")] = l.Version;
    }

    private static EntityLimit FromRow(object?[] r) => new()
    {
        Entity = new EntityRef((string)r[0]!, (string)r[1]!),
        Level = Enum.Parse<LimitLevel>((string)r[2]!, ignoreCase: true),
        Source = Enum.Parse<LimitSource>((string)r[3]!, ignoreCase: true),
        MessagesPerMinute = r[4] as double?,
        RecipientsPerHour = r[5] as double?,
        DistinctRecipientsPerHour = r[6] as double?,
        RecipientsPerMessage = r[7] is long n ? (int)n : null,
        AuthLocked = (bool)r[8]!,
        Tarpit = TimeSpan.FromMilliseconds((ulong)r[9]!),
        Blocked = (bool)r[10]!,
        Reason = (string)r[11]!,
        SetBy = (string)r[12]!,
        SetAt = (DateTime)r[13]!,
        ExpiresAt = r[14] as DateTime?,
        Version = (ulong)r[15]!,
    };

    public async ValueTask DisposeAsync()
    {
        _writes.Writer.TryComplete();
        await _writer;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Limit {Entity} → {Level}: {Reason}")]
    private static partial void LogChange(ILogger logger, string entity, string level, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Actor} applied {Kind} to {Entity}: {Reason}")]
    private static partial void LogOverride(ILogger logger, string actor, string kind, string entity, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not record {Count} limit changes; retrying")]
    private static partial void LogWriteFailed(ILogger logger, Exception exception, int count);
}
