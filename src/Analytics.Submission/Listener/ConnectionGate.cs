using System.Collections.Concurrent;
using Analytics.Events;
using Analytics.Limits;

namespace Analytics.Submission.Listener;

/// <summary>
/// Session slots. Each role has its own pool (<see cref="SessionLimitOptions.MaxSessions"/>), so a
/// flood on the MX cannot take the slots submission users need; inside a pool one address
/// (<see cref="SessionLimitOptions.MaxSessionsPerIp"/>) and one network — IPv4 /24, IPv6 /64, where
/// a single host has millions of addresses — (<see cref="SessionLimitOptions.MaxSessionsPerNetwork"/>)
/// may hold only so many. A slot is released the moment the connection closes. When a pool is full, a
/// new connection takes the slot of the session that has waited longest for a command before AUTH
/// (submission) or a transaction (MX), if it has waited <see cref="EvictIdleAfter"/> at least: idle
/// connections from many addresses cannot keep an ordinary client out.
/// </summary>
internal sealed class ConnectionGate
{
    private readonly SessionLimitOptions _limits;
    private readonly Pool[] _pools = [new(), new(), new()];
    private readonly ConcurrentDictionary<SessionState, byte> _sessions = new();
    private long _evicted;

    /// <summary>How long a session before AUTH must have waited for a command to give its slot to a new connection in a full pool.</summary>
    public static readonly TimeSpan EvictIdleAfter = TimeSpan.FromSeconds(2);

    /// <summary>Idle sessions closed to make room in a full pool, since start.</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    public ConnectionGate(SessionLimitOptions limits) => _limits = limits;

    /// <summary>Open sessions over every role.</summary>
    public int Count => _sessions.Count;

    public IEnumerable<SessionState> Sessions => _sessions.Keys;

    /// <summary>How full a role's pool is, 0 to 1.</summary>
    public double Load(ListenerRole role) => Volatile.Read(ref PoolOf(role).Total) / (double)_limits.MaxSessions;

    /// <summary>Takes a slot; false (and nothing taken) when a limit is reached, with the reason.</summary>
    public bool TryEnter(SessionState session, out string reason)
    {
        var pool = PoolOf(session.Role);
        if (Interlocked.Increment(ref pool.Total) > _limits.MaxSessions)
        {
            Interlocked.Decrement(ref pool.Total);
            if (!TryEvictIdle(session.Role))
            {
                reason = "too many sessions";
                return false;
            }

            if (Interlocked.Increment(ref pool.Total) > _limits.MaxSessions)
            {
                Interlocked.Decrement(ref pool.Total);
                reason = "too many sessions";
                return false;
            }
        }

        if (!Take(pool.PerHost, session.Address, _limits.MaxSessionsPerIp))
        {
            Interlocked.Decrement(ref pool.Total);
            reason = "too many sessions from this address";
            return false;
        }

        if (!Take(pool.PerHost, session.Address.Network(), _limits.MaxSessionsPerNetwork))
        {
            Release(pool.PerHost, session.Address);
            Interlocked.Decrement(ref pool.Total);
            reason = "too many sessions from this network";
            return false;
        }

        _sessions.TryAdd(session, 0);
        reason = "";
        return true;
    }

    public void Exit(SessionState session)
    {
        if (_sessions.TryRemove(session, out _))
        {
            var pool = PoolOf(session.Role);
            Release(pool.PerHost, session.Address);
            Release(pool.PerHost, session.Address.Network());
            Interlocked.Decrement(ref pool.Total);
        }
    }

    // The pool is full: close the session of this role that has waited longest for a command before
    // AUTH or a transaction (at least EvictIdleAfter), and give its slot back now; its reader answers
    // 421 4.4.2 and ends it. A scan of the open sessions, only when a pool is full.
    private bool TryEvictIdle(ListenerRole role)
    {
        while (true)
        {
            SessionState? oldest = null;
            var longest = EvictIdleAfter;
            foreach (var candidate in _sessions.Keys)
            {
                if (candidate.Role == role && candidate.IdleBeforeGreetingStage is { } idle && idle >= longest)
                {
                    oldest = candidate;
                    longest = idle;
                }
            }

            if (oldest is null)
            {
                return false;
            }

            if (oldest.TryEvict())
            {
                Exit(oldest);
                Interlocked.Increment(ref _evicted);
                oldest.Pipe?.Interrupt();
                return true;
            }
        }
    }

    private Pool PoolOf(ListenerRole role) => _pools[(int)role % _pools.Length];

    private static bool Take(ConcurrentDictionary<AddressKey, int> counts, AddressKey key, int max)
    {
        while (true)
        {
            if (counts.TryGetValue(key, out var n))
            {
                if (n >= max)
                {
                    return false;
                }

                if (counts.TryUpdate(key, n + 1, n))
                {
                    return true;
                }
            }
            else if (counts.TryAdd(key, 1))
            {
                return true;
            }
        }
    }

    private static void Release(ConcurrentDictionary<AddressKey, int> counts, AddressKey key)
    {
        while (counts.TryGetValue(key, out var n))
        {
            // An entry at zero is removed, so the map holds only addresses with a session open.
            if (n <= 1 ? counts.TryRemove(new KeyValuePair<AddressKey, int>(key, n)) : counts.TryUpdate(key, n - 1, n))
            {
                return;
            }
        }
    }

    private sealed class Pool
    {
        public readonly ConcurrentDictionary<AddressKey, int> PerHost = new();
        public int Total;
    }
}
