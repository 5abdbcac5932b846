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
/// the fast path that needs no model: N AUTH failures from one IP, one network or against one user
/// within a window lock it, each lock twice as long as the previous one up to a maximum; a password
/// failing against several accounts is refused everywhere (spraying); unknown recipients counted
/// across sessions hold the IP, its network or the user (harvesting). Reads never wait: lookups in
/// concurrent dictionaries keyed without allocating (addresses as 128-bit numbers, users
/// case-insensitively), skipped entirely while nothing is held; a rate or a failure takes only its
/// own entry's lock.
/// </summary>
public sealed class StaticLimitBook : ILimitBook
{
    private readonly DefenseOptions _defenses;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Bucket> _messageRates = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, Bucket> _recipientRates = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<UInt128, FailureState> _ipFailures = new();
    private readonly ConcurrentDictionary<UInt128, FailureState> _netFailures = new();
    private readonly ConcurrentDictionary<string, FailureState> _userFailures = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<ulong, SprayState> _sprays = new();

    // Unknown-recipient counters; a "hold" is the counter's lock. IPs and networks share one map.
    private readonly ConcurrentDictionary<UInt128, FailureState> _hostUnknowns = new();
    private readonly ConcurrentDictionary<string, FailureState> _userUnknowns = new(StringComparer.OrdinalIgnoreCase);
    private long _holdsUntil;
    private long _netLocksUntil;
    private long _spraysUntil;
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
        if (snapshot.BlockedNetworks.Count > 0)
        {
            var address = Unmap(subject.Address);
            foreach (var network in snapshot.BlockedNetworks)
            {
                if (network.Contains(address))
                {
                    return new LimitDecision(LimitAction.Block, TimeSpan.Zero, "blocked network " + network);
                }
            }
        }

        var now = _time.GetTimestamp();
        return HostHeld(subject, now) is { } why ? new LimitDecision(LimitAction.TempFail, TimeSpan.Zero, why) : LimitDecision.Allow;
    }

    public LimitDecision CheckAuth(LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        var ip = AddressKeys.Ip(subject.Address);
        if (_ipFailures.TryGetValue(ip, out var ipState) && ipState.IsLocked(now))
        {
            return new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "ip locked after repeated AUTH failures");
        }

        if (now < Volatile.Read(ref _netLocksUntil) && _netFailures.TryGetValue(AddressKeys.Net(ip), out var netState) && netState.IsLocked(now))
        {
            return new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "network locked after AUTH failures from many of its addresses");
        }

        if (HostHeld(subject, now) is { } why)
        {
            return new LimitDecision(LimitAction.Lock, TimeSpan.Zero, why);
        }

        if (subject.SecretTag != 0 && now < Volatile.Read(ref _spraysUntil) && _sprays.TryGetValue(subject.SecretTag, out var spray) && spray.IsBurned(now))
        {
            return new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "password sprayed over many accounts");
        }

        if (subject.User.Length > 0 && _userFailures.TryGetValue(subject.User, out var u) && u.IsLocked(now))
        {
            return new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "user locked after repeated AUTH failures");
        }

        return subject.User.Length > 0 && Snapshot.BlockedUsers.Contains(UserStore.Normalize(subject.User))
            ? new LimitDecision(LimitAction.Lock, TimeSpan.Zero, "user blocked")
            : LimitDecision.Allow;
    }

    public LimitDecision CheckMail(LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        if ((HostHeld(subject, now) ?? UserHeld(subject, now)) is { } why)
        {
            return new LimitDecision(LimitAction.TempFail, TimeSpan.Zero, why);
        }

        var snapshot = Snapshot;
        if (subject.User.Length == 0)
        {
            return LimitDecision.Allow;
        }

        if (snapshot.BlockedUsers.Count > 0 && snapshot.BlockedUsers.Contains(UserStore.Normalize(subject.User)))
        {
            return new LimitDecision(LimitAction.Block, TimeSpan.Zero, "user blocked");
        }

        if (snapshot.MessagesPerMinute > 0 && !subject.OwnRates
            && !_messageRates.GetOrAdd(subject.User, static _ => new Bucket()).TryTake(snapshot.MessagesPerMinute, TimeSpan.FromMinutes(1), now, _time.TimestampFrequency))
        {
            return new LimitDecision(LimitAction.TempFail, TimeSpan.Zero, "message rate exceeded");
        }

        return LimitDecision.Allow;
    }

    public LimitDecision CheckRcpt(LimitSubject subject, int recipientsInMessage)
    {
        var now = _time.GetTimestamp();
        if ((HostHeld(subject, now) ?? UserHeld(subject, now)) is { } why)
        {
            return new LimitDecision(LimitAction.TempFail, TimeSpan.Zero, why);
        }

        var snapshot = Snapshot;
        if (recipientsInMessage >= snapshot.RecipientsPerMessage)
        {
            return new LimitDecision(LimitAction.TooManyRecipients, TimeSpan.Zero, "too many recipients");
        }

        if (subject.User.Length > 0 && snapshot.RecipientsPerHour > 0 && !subject.OwnRates
            && !_recipientRates.GetOrAdd(subject.User, static _ => new Bucket()).TryTake(snapshot.RecipientsPerHour, TimeSpan.FromHours(1), now, _time.TimestampFrequency))
        {
            return new LimitDecision(LimitAction.TempFail, TimeSpan.Zero, "recipient rate exceeded");
        }

        return LimitDecision.Allow;
    }

    public AuthFailureOutcome RecordAuthFailure(LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        var d = _defenses;
        var frequency = _time.TimestampFrequency;
        var ip = AddressKeys.Ip(subject.Address);
        var ipLock = _ipFailures.GetOrAdd(ip, static _ => new FailureState())
            .Record(now, d.AuthFailuresPerIp, d.AuthFailureWindow, d.LockoutBase, d.LockoutMax, frequency);
        var netLock = _netFailures.GetOrAdd(AddressKeys.Net(ip), static _ => new FailureState())
            .Record(now, d.AuthFailuresPerNetwork, d.AuthFailureWindow, d.LockoutBase, d.LockoutMax, frequency);
        if (netLock > TimeSpan.Zero)
        {
            Extend(ref _netLocksUntil, now + Ticks(netLock, frequency));
        }

        var userLock = TimeSpan.Zero;
        var burned = false;
        if (subject.User.Length > 0)
        {
            userLock = _userFailures.GetOrAdd(UserStore.Normalize(subject.User), static _ => new FailureState())
                .Record(now, d.AuthFailuresPerUser, d.AuthFailureWindow, d.LockoutBase, d.LockoutMax, frequency);
            if (subject.SecretTag != 0)
            {
                SweepSprays(now);
                var window = Ticks(d.AuthFailureWindow, frequency);
                burned = _sprays.GetOrAdd(subject.SecretTag, static _ => new SprayState()).Record(UserStore.Normalize(subject.User), now, window, d.SprayAccountsPerPassword);
                if (burned)
                {
                    Extend(ref _spraysUntil, now + window);
                }
            }
        }

        var longest = new[] { ipLock, netLock, userLock }.Max();
        return new AuthFailureOutcome(ipLock > TimeSpan.Zero, userLock > TimeSpan.Zero, longest) { NetworkLocked = netLock > TimeSpan.Zero, PasswordBurned = burned };
    }

    public void RecordAuthSuccess(LimitSubject subject)
    {
        // The IP and the network keep their counts: one good account must not reset a spraying IP.
        if (_userFailures.TryGetValue(subject.User, out var state))
        {
            state.ClearFailures();
        }
    }

    public HoldOutcome RecordUnknownRecipient(LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        if ((HostHeld(subject, now) ?? UserHeld(subject, now)) is { } already)
        {
            return new HoldOutcome(true, already, TimeSpan.Zero);
        }

        var d = _defenses;
        var frequency = _time.TimestampFrequency;
        var ip = AddressKeys.Ip(subject.Address);
        var net = AddressKeys.Net(ip);
        var held = HoldOutcome.None;
        void Count(FailureState state, int threshold, string scope)
        {
            var duration = state.Record(now, threshold, d.UnknownRecipientWindow, d.HoldDuration, Max(d.HoldDuration, d.LockoutMax), frequency);
            if (duration > TimeSpan.Zero)
            {
                Extend(ref _holdsUntil, now + Ticks(duration, frequency));
                held = held.Held ? held : new HoldOutcome(true, scope, duration);
            }
        }

        Count(_hostUnknowns.GetOrAdd(ip, static _ => new FailureState()), d.UnknownRecipientsPerIp, "ip " + Unmap(subject.Address));
        Count(_hostUnknowns.GetOrAdd(net, static _ => new FailureState()), d.UnknownRecipientsPerNetwork, "network " + AddressKeys.NetText(subject.Address));
        if (subject.User.Length > 0)
        {
            Count(_userUnknowns.GetOrAdd(UserStore.Normalize(subject.User), static _ => new FailureState()), d.UnknownRecipientsPerUser, "user");
        }

        return held;
    }

    /// <summary>Why the client's IP or network is held (unknown-recipient probing), or null.</summary>
    private string? HostHeld(LimitSubject subject, long now)
    {
        if (now >= Volatile.Read(ref _holdsUntil))
        {
            return null;
        }

        var ip = AddressKeys.Ip(subject.Address);
        if (_hostUnknowns.TryGetValue(ip, out var own) && own.IsLocked(now))
        {
            return "ip held after probing unknown recipients";
        }

        return _hostUnknowns.TryGetValue(AddressKeys.Net(ip), out var net) && net.IsLocked(now) ? "network held after probing unknown recipients" : null;
    }

    private string? UserHeld(LimitSubject subject, long now) =>
        subject.User.Length > 0 && now < Volatile.Read(ref _holdsUntil) && _userUnknowns.TryGetValue(subject.User, out var state) && state.IsLocked(now)
            ? "user held after probing unknown recipients"
            : null;

    // Forget passwords that stopped failing, so the map stays as small as the current attack.
    private void SweepSprays(long now)
    {
        if (_sprays.Count < 50_000)
        {
            return;
        }

        var window = Ticks(_defenses.AuthFailureWindow, _time.TimestampFrequency);
        foreach (var (tag, state) in _sprays)
        {
            if (state.IsStale(now, window))
            {
                _sprays.TryRemove(tag, out _);
            }
        }
    }

    private static void Extend(ref long until, long value)
    {
        var current = Volatile.Read(ref until);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref until, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }

    private static long Ticks(TimeSpan span, long frequency) => (long)(span.TotalSeconds * frequency);

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

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

    /// <summary>A token bucket: capacity = one period's allowance, refilled continuously. Locks only itself; no allocation.</summary>
    private sealed class Bucket
    {
        private readonly Lock _gate = new();
        private double _tokens = double.NaN;
        private long _stamp;

        public bool TryTake(int capacity, TimeSpan period, long now, long frequency)
        {
            lock (_gate)
            {
                _tokens = double.IsNaN(_tokens)
                    ? capacity
                    : Math.Min(capacity, _tokens + ((now - _stamp) / (double)frequency * capacity / period.TotalSeconds));
                _stamp = now;
                if (_tokens < 1)
                {
                    return false;
                }

                _tokens -= 1;
                return true;
            }
        }
    }

    /// <summary>Failures (or unknown recipients) of one entity. Reads (IsLocked) are lock-free; recording takes the entry's lock.</summary>
    private sealed class FailureState
    {
        private readonly Queue<long> _failures = new();
        private long _lockedUntil;
        private long _lastLockEnd;
        private int _level;

        public bool IsLocked(long now) => now < Volatile.Read(ref _lockedUntil);

        public TimeSpan Record(long now, int threshold, TimeSpan windowSpan, TimeSpan lockBase, TimeSpan lockMax, long frequency)
        {
            lock (_failures)
            {
                var window = Ticks(windowSpan, frequency);
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

                var ticks = Math.Min(lockBase.Ticks * (1L << Math.Min(_level, 20)), lockMax.Ticks);
                var duration = TimeSpan.FromTicks(ticks);
                _level++;
                _failures.Clear();
                var until = now + Ticks(duration, frequency);
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

    /// <summary>The accounts one password (by its tag) failed against recently; burned once there are too many.</summary>
    private sealed class SprayState
    {
        private readonly List<(string User, long At)> _users = [];
        private long _burnedUntil;
        private long _last;

        public bool IsBurned(long now) => now < Volatile.Read(ref _burnedUntil);

        public bool IsStale(long now, long window) => now - Volatile.Read(ref _last) > window && !IsBurned(now);

        public bool Record(string user, long now, long window, int threshold)
        {
            lock (_users)
            {
                Volatile.Write(ref _last, now);
                _users.RemoveAll(u => now - u.At > window || u.User == user);
                _users.Add((user, now));
                if (_users.Count < threshold)
                {
                    return false;
                }

                Volatile.Write(ref _burnedUntil, now + window);
                return true;
            }
        }
    }
}

/// <summary>Client addresses as 128-bit keys (IPv4 mapped), and their networks: IPv4 /24, IPv6 /64.</summary>
internal static class AddressKeys
{
    // A network key sets the top bit, which no IPv4-mapped address and no /64 prefix we key has.
    private static readonly UInt128 NetFlag = UInt128.One << 127;

    public static UInt128 Ip(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            bytes[..10].Clear();
            bytes[10] = 0xff;
            bytes[11] = 0xff;
            address.TryWriteBytes(bytes[12..], out _);
        }
        else
        {
            address.TryWriteBytes(bytes, out _);
        }

        return System.Buffers.Binary.BinaryPrimitives.ReadUInt128BigEndian(bytes);
    }

    public static UInt128 Net(UInt128 ip) => NetFlag | ((ip >> 32) == 0xffff ? ip & ~(UInt128)0xff : ip & ~(UInt128)ulong.MaxValue);

    public static string NetText(IPAddress address)
    {
        var a = address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
        var bytes = a.GetAddressBytes();
        if (a.AddressFamily == AddressFamily.InterNetwork)
        {
            bytes[3] = 0;
            return new IPAddress(bytes) + "/24";
        }

        Array.Clear(bytes, 8, 8);
        return new IPAddress(bytes) + "/64";
    }
}
