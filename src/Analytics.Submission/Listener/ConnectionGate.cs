using System.Collections.Concurrent;
using System.Net;
using Analytics.Limits;

namespace Analytics.Submission.Listener;

/// <summary>Counts open sessions, in total and per client address, and refuses past the limits.</summary>
internal sealed class ConnectionGate
{
    private readonly SessionLimitOptions _limits;
    private readonly ConcurrentDictionary<IPAddress, int> _perIp = new();
    private readonly ConcurrentDictionary<SessionState, byte> _sessions = new();
    private int _total;

    public ConnectionGate(SessionLimitOptions limits) => _limits = limits;

    public int Count => Volatile.Read(ref _total);

    public IEnumerable<SessionState> Sessions => _sessions.Keys;

    /// <summary>Takes a slot; false (and nothing taken) when a limit is reached, with the reason.</summary>
    public bool TryEnter(SessionState session, out string reason)
    {
        if (Interlocked.Increment(ref _total) > _limits.MaxSessions)
        {
            Interlocked.Decrement(ref _total);
            reason = "too many sessions";
            return false;
        }

        var count = _perIp.AddOrUpdate(session.ClientIp, 1, static (_, n) => n + 1);
        if (count > _limits.MaxSessionsPerIp)
        {
            Leave(session.ClientIp);
            Interlocked.Decrement(ref _total);
            reason = "too many sessions from this address";
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
            Leave(session.ClientIp);
            Interlocked.Decrement(ref _total);
        }
    }

    private void Leave(IPAddress address)
    {
        while (_perIp.TryGetValue(address, out var n))
        {
            if (n <= 1 ? _perIp.TryRemove(new KeyValuePair<IPAddress, int>(address, n)) : _perIp.TryUpdate(address, n - 1, n))
            {
                return;
            }
        }
    }
}
