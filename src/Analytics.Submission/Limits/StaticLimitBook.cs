using System.Collections.Concurrent;
using System.Collections.Frozen;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Options;

namespace Analytics.Submission;

/// <summary>The static part of the limits: an immutable value, replaced as a whole.</summary>
public sealed record LimitSnapshot
{
    public IReadOnlyList<IPNetwork> BlockedNetworks { get; init; } = [];

    public FrozenSet<string> BlockedUsers { get; init; } = FrozenSet<string>.Empty;

    /// <summary>0 = unlimited.</summary>
    public int MessagesPerMinute { get; init; }

    /// <summary>0 = unlimited.</summary>
    public int RecipientsPerHour { get; init; }

    public int RecipientsPerMessage { get; init; } = 100;

    public static LimitSnapshot From(SubmissionOptions options) => new()
    {
        BlockedNetworks = [.. options.Policy.BlockedNetworks.Select(n => StaticLimitBook.TryParseNetwork(n, out var net) ? net : throw new FormatException(n))],
        BlockedUsers = options.Policy.BlockedUsers.Select(UserStore.Normalize).ToFrozenSet(StringComparer.Ordinal),
        MessagesPerMinute = options.Policy.MessagesPerMinute,
        RecipientsPerHour = options.Policy.RecipientsPerHour,
        RecipientsPerMessage = options.Limits.MaxRecipientsPerMessage,
    };
}

/// <summary>
/// Limits from configuration (<see cref="LimitSnapshot"/>, swappable with <see cref="Update"/>) plus
/// the AUTH fast path: N failures from one IP or against one user within a window lock it, each lock
/// twice as long as the previous one up to a maximum. Rates are token buckets per user whose state
/// is an immutable object replaced by compare-and-swap, so no caller ever waits on a lock.
/// </summary>
public sealed class StaticLimitBook : ILimitBook
{
    private readonly DefenseOptions _defenses;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Bucket> _messageRates = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Bucket> _recipientRates = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, FailureState> _ipFailures = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, FailureState> _userFailures = new(StringComparer.Ordinal);
    private LimitSnapshot _snapshot;

    public StaticLimitBook(IOptions<SubmissionOptions> options, TimeProvider time)
        : this(LimitSnapshot.From(options.Value), options.Value.Defenses, time)
    {
    }

    public StaticLimitBook(LimitSnapshot snapshot, DefenseOptions defenses, TimeProvider time)
    {
        _snapshot = snapshot;
        _defenses = defenses;
        _time = time;
    }

    public LimitSnapshot Snapshot => Volatile.Read(ref _snapshot);

    public void Update(LimitSnapshot snapshot) => Volatile.Write(ref _snapshot, snapshot);

    public LimitDecision CheckConnect(LimitSubject subject)
    {
        var snapshot = Snapshot;
        foreach (var network in snapshot.BlockedNetworks)
        {
            if (network.Contains(Unmap(subject.Address)))
            {
                return new LimitDecision(LimitAction.Block, TimeSpan.Zero, "blocked network " + network);
            }
        }

        return LimitDecision.Allow;
    }

    public LimitDecision CheckAuth(LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        if (_ipFailures.TryGetValue(IpKey(subject.Address), out var ip) && ip.IsLocked(now))
        {
            return new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "ip locked after repeated AUTH failures");
        }

        var user = UserStore.Normalize(subject.User);
        if (_userFailures.TryGetValue(user, out var u) && u.IsLocked(now))
        {
            return new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "user locked after repeated AUTH failures");
        }

        return Snapshot.BlockedUsers.Contains(user)
            ? new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "user blocked")
            : LimitDecision.Allow;
    }

    public LimitDecision CheckMail(LimitSubject subject)
    {
        var snapshot = Snapshot;
        if (subject.User.Length == 0)
        {
            return LimitDecision.Allow;
        }

        var user = UserStore.Normalize(subject.User);
        if (snapshot.BlockedUsers.Contains(user))
        {
            return new LimitDecision(LimitAction.Block, TimeSpan.Zero, "user blocked");
        }

        if (snapshot.MessagesPerMinute > 0
            && !_messageRates.GetOrAdd(user, static _ => new Bucket()).TryTake(snapshot.MessagesPerMinute, TimeSpan.FromMinutes(1), _time))
        {
            return new LimitDecision(LimitAction.TempFail, TimeSpan.Zero, "message rate exceeded");
        }

        return LimitDecision.Allow;
    }

    public LimitDecision CheckRcpt(LimitSubject subject, int recipientsInMessage)
    {
        var snapshot = Snapshot;
        if (recipientsInMessage >= snapshot.RecipientsPerMessage)
        {
            return new LimitDecision(LimitAction.TooManyRecipients, TimeSpan.Zero, "too many recipients");
        }

        if (subject.User.Length > 0 && snapshot.RecipientsPerHour > 0
            && !_recipientRates.GetOrAdd(UserStore.Normalize(subject.User), static _ => new Bucket()).TryTake(snapshot.RecipientsPerHour, TimeSpan.FromHours(1), _time))
        {
            return new LimitDecision(LimitAction.TempFail, TimeSpan.Zero, "recipient rate exceeded");
        }

        return LimitDecision.Allow;
    }

    public AuthFailureOutcome RecordAuthFailure(LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        var ipLock = _ipFailures.GetOrAdd(IpKey(subject.Address), static _ => new FailureState())
            .Record(now, _defenses.AuthFailuresPerIp, _defenses, _time.TimestampFrequency);
        var userLock = TimeSpan.Zero;
        if (subject.User.Length > 0)
        {
            userLock = _userFailures.GetOrAdd(UserStore.Normalize(subject.User), static _ => new FailureState())
                .Record(now, _defenses.AuthFailuresPerUser, _defenses, _time.TimestampFrequency);
        }

        return new AuthFailureOutcome(ipLock > TimeSpan.Zero, userLock > TimeSpan.Zero, ipLock > userLock ? ipLock : userLock);
    }

    public void RecordAuthSuccess(LimitSubject subject)
    {
        // The IP keeps its count: one good account must not reset a spraying IP.
        if (_userFailures.TryGetValue(UserStore.Normalize(subject.User), out var state))
        {
            state.ClearFailures();
        }
    }

    public static bool TryParseNetwork(string text, out IPNetwork network)
    {
        network = default;
        text = text.Trim();
        if (IPNetwork.TryParse(text, out var parsed))
        {
            network = parsed;
            return true;
        }

        if (IPAddress.TryParse(text, out var address))
        {
            address = Unmap(address);
            network = new IPNetwork(address, address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128);
            return true;
        }

        return false;
    }

    private static IPAddress Unmap(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    private static string IpKey(IPAddress address) => Unmap(address).ToString();

    /// <summary>A token bucket whose state is replaced atomically (compare-and-swap, no lock).</summary>
    private sealed class Bucket
    {
        private sealed record State(double Tokens, long Stamp);

        private State? _state;

        public bool TryTake(int capacity, TimeSpan period, TimeProvider time)
        {
            while (true)
            {
                var now = time.GetTimestamp();
                var current = Volatile.Read(ref _state);
                var tokens = current is null
                    ? capacity
                    : Math.Min(capacity, current.Tokens + (time.GetElapsedTime(current.Stamp, now).TotalSeconds * capacity / period.TotalSeconds));
                if (tokens < 1)
                {
                    return false;
                }

                if (Interlocked.CompareExchange(ref _state, new State(tokens - 1, now), current) == current)
                {
                    return true;
                }
            }
        }
    }

    /// <summary>Failures of one IP or user. Reads (IsLocked) are lock-free; a failure takes the entry's lock.</summary>
    private sealed class FailureState
    {
        private readonly Queue<long> _failures = new();
        private long _lockedUntil;
        private long _lastLockEnd;
        private int _level;

        public bool IsLocked(long now) => now < Volatile.Read(ref _lockedUntil);

        public TimeSpan Record(long now, int threshold, DefenseOptions options, long frequency)
        {
            lock (_failures)
            {
                var window = (long)(options.AuthFailureWindow.TotalSeconds * frequency);
                while (_failures.Count > 0 && now - _failures.Peek() > window)
                {
                    _failures.Dequeue();
                }

                _failures.Enqueue(now);
                if (_failures.Count < threshold)
                {
                    return TimeSpan.Zero;
                }

                // Back-off forgets itself after a quiet window past the last lock.
                if (_lastLockEnd != 0 && now - _lastLockEnd > window)
                {
                    _level = 0;
                }

                var ticks = Math.Min(options.LockoutBase.Ticks * (1L << Math.Min(_level, 20)), options.LockoutMax.Ticks);
                var duration = TimeSpan.FromTicks(ticks);
                _level++;
                _failures.Clear();
                var until = now + (long)(duration.TotalSeconds * frequency);
                _lastLockEnd = until;
                Volatile.Write(ref _lockedUntil, until);
                return duration;
            }
        }

        public void ClearFailures()
        {
            lock (_failures)
            {
                _failures.Clear();
            }
        }
    }
}
