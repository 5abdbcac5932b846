using System.Collections.Concurrent;

namespace Analytics.Limits;

/// <summary>
/// The defenses that need no model and act at once, across sessions. They judge by share and
/// history, not by counts alone, because the same counts come from a harvester and from a newsletter
/// with a few stale addresses, from a password guesser and from an office of three hundred behind one
/// NAT address:
/// <list type="bullet">
/// <item>AUTH failures lock an IP or its network once there are enough of them in the window and they
/// are at least a share of all its AUTH attempts (an office's or a carrier's handful of typos among
/// hundreds of logins never do);</item>
/// <item>an account is locked from a network after enough distinct wrong passwords from it (a phone
/// retrying one stale password is not guessing, and counts nowhere), and from every network but its
/// owner's after enough from many networks;</item>
/// <item>a password failing against several accounts is refused everywhere (spraying);</item>
/// <item>an account sending from a network it first used less than a day ago, while it has an older one
/// of its own, sends at a person's rate (a taken-over account's burst; the book keeps the bucket);</item>
/// <item>unknown recipients hold the IP, its network or the account once they are enough and a share
/// of its recipients, the mail it delivered lately counting as known recipients up to a credit
/// (a list server with stale addresses has a record; a harvester has none).</item>
/// </list>
/// Each lock lasts twice as long as the previous one, up to a maximum. Lookups are skipped entirely
/// while nothing is locked or held; maps keyed by attacker-chosen values are swept of stale entries
/// so they stay as small as the current attack.
/// </summary>
internal sealed class FastPath
{
    // Past this many entries a map is swept of entries that hold nothing (at most once a window).
    private const int SweepThreshold = 50_000;

    private readonly FastPathOptions _options;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<AddressKey, RatioCounter> _hostFailures = new();
    private readonly ConcurrentDictionary<(string User, AddressKey Network), FailureCounter> _userFailures = new();
    private readonly ConcurrentDictionary<string, WrongPasswords> _wrongPasswords = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, AccountFailures> _accountFailures = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, KnownNetworks> _known = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<ulong, SprayCounter> _sprays = new();

    // Unknown-recipient counters (with the recipients delivered lately); a "hold" is the counter's
    // lock. IPs and networks share one map.
    private readonly ConcurrentDictionary<AddressKey, RatioCounter> _hostUnknowns = new();
    private readonly ConcurrentDictionary<string, RatioCounter> _userUnknowns = new(StringComparer.Ordinal);
    private long _locksUntil;
    private long _holdsUntil;
    private long _spraysUntil;
    private long _lastSweep;

    public FastPath(FastPathOptions options, TimeProvider time)
    {
        _options = options;
        _time = time;
    }

    /// <summary>Entries held in memory, over all maps (for metrics and the sweep test).</summary>
    public int Entries => _hostFailures.Count + _userFailures.Count + _accountFailures.Count + _wrongPasswords.Count + _sprays.Count + _hostUnknowns.Count + _userUnknowns.Count;

    /// <summary>Why AUTH from this subject is refused now, or null.</summary>
    public string? AuthRefusal(in LimitSubject subject, ref CheckClock clock)
    {
        var locked = Pending(ref _locksUntil, ref clock);
        if (locked)
        {
            var now = clock.Now;
            if (_hostFailures.TryGetValue(subject.Address, out var ip) && ip.IsLocked(now))
            {
                return "ip locked after repeated AUTH failures";
            }

            if (_hostFailures.TryGetValue(subject.Address.Network(), out var net) && net.IsLocked(now))
            {
                return "network locked after AUTH failures from many of its addresses";
            }
        }

        if (HostHeld(subject, ref clock) is { } held)
        {
            return held;
        }

        if (subject.SecretTag != 0 && Pending(ref _spraysUntil, ref clock) && _sprays.TryGetValue(subject.SecretTag, out var spray) && spray.IsBurned(clock.Now))
        {
            return "password sprayed over many accounts";
        }

        if (subject.User.Length == 0 || !locked)
        {
            return null;
        }

        var network = subject.Address.Network();
        if (_userFailures.TryGetValue((subject.User, network), out var fromHere) && fromHere.IsLocked(clock.Now))
        {
            return "user locked after repeated AUTH failures from this network";
        }

        // Guessing spread over many networks locks the account, but never against its owner.
        return _accountFailures.TryGetValue(subject.User, out var account) && account.IsLocked(clock.Now) && !IsOwnersNetwork(subject.User, network, clock.Now)
            ? "user locked after AUTH failures from many networks"
            : null;
    }

    /// <summary>
    /// Whether a deadline (<see cref="_locksUntil"/>, <see cref="_holdsUntil"/>, <see cref="_spraysUntil"/>)
    /// is still ahead. While none was ever set the clock is not read at all, and one that has passed is
    /// forgotten (0), so checks go back to not reading it once an attack is over. An
    /// <see cref="Extend"/> racing with the reset wins: both compare-and-swap.
    /// </summary>
    private static bool Pending(ref long until, ref CheckClock clock)
    {
        var deadline = Volatile.Read(ref until);
        if (deadline == 0)
        {
            return false;
        }

        if (clock.Now < deadline)
        {
            return true;
        }

        Interlocked.CompareExchange(ref until, 0, deadline);
        return false;
    }

    public bool IsOwnersNetwork(in LimitSubject subject) =>
        subject.User.Length > 0 && IsOwnersNetwork(subject.User, subject.Address.Network(), _time.GetTimestamp());

    private bool IsOwnersNetwork(string user, AddressKey network, long now) =>
        _known.TryGetValue(user, out var known) && known.Contains(network, now, FailureCounter.Ticks(_options.KnownNetworkTtl, _time.TimestampFrequency));

    /// <summary>
    /// Whether the account sends from a network it first logged in from less than
    /// <see cref="FastPathOptions.NewNetworkPeriod"/> ago while it has an older one of its own: a taken-over
    /// account's burst from the attacker's address, or its owner on a trip. An account with no older
    /// network (a new one, or a fresh install without history) has nothing to compare with: false.
    /// </summary>
    public bool IsNewNetwork(in LimitSubject subject, long now) =>
        subject.User.Length > 0 && _known.TryGetValue(subject.User, out var known)
        && known.IsNew(subject.Address.Network(), now, FailureCounter.Ticks(_options.KnownNetworkTtl, _time.TimestampFrequency), Period);

    private long Period => FailureCounter.Ticks(_options.NewNetworkPeriod, _time.TimestampFrequency);

    /// <summary>Why the client's IP or network is held (unknown-recipient probing), or null.</summary>
    public string? HostHeld(in LimitSubject subject, ref CheckClock clock)
    {
        if (!Pending(ref _holdsUntil, ref clock))
        {
            return null;
        }

        if (_hostUnknowns.TryGetValue(subject.Address, out var own) && own.IsLocked(clock.Now))
        {
            return "ip held after probing unknown recipients";
        }

        return _hostUnknowns.TryGetValue(subject.Address.Network(), out var net) && net.IsLocked(clock.Now) ? "network held after probing unknown recipients" : null;
    }

    /// <summary>Why the account is held (unknown-recipient probing), or null.</summary>
    public string? UserHeld(in LimitSubject subject, ref CheckClock clock) =>
        subject.User.Length > 0 && Pending(ref _holdsUntil, ref clock) && _userUnknowns.TryGetValue(subject.User, out var state) && state.IsLocked(clock.Now)
            ? "user held after probing unknown recipients"
            : null;

    public AuthFailureOutcome RecordAuthFailure(in LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        var o = _options;
        var frequency = _time.TimestampFrequency;
        Sweep(now);
        var userLock = TimeSpan.Zero;
        var accountLock = TimeSpan.Zero;
        var burned = false;

        // The same wrong password for the same account again (a client retrying a stale one) is no new
        // evidence: it counts against nothing.
        var repeat = subject.User.Length > 0 && subject.SecretTag != 0
            && _wrongPasswords.GetOrAdd(subject.User, static _ => new WrongPasswords()).Repeats(subject.SecretTag, now, FailureCounter.Ticks(o.AuthFailureWindow, frequency));
        if (repeat)
        {
            return default;
        }

        var ipRule = new RatioRule(o.AuthFailuresPerIp, o.AuthFailureShare, o.AuthFailureWindow, o.LockoutBase, o.LockoutMax, 0, TimeSpan.Zero);
        var ipLock = _hostFailures.GetOrAdd(subject.Address, static _ => new RatioCounter()).Bad(now, ipRule, frequency);
        var netLock = _hostFailures.GetOrAdd(subject.Address.Network(), static _ => new RatioCounter())
            .Bad(now, ipRule with { Threshold = o.AuthFailuresPerNetwork }, frequency);
        if (subject.User.Length > 0)
        {
            var network = subject.Address.Network();
            userLock = _userFailures.GetOrAdd((subject.User, network), static _ => new FailureCounter())
                .Record(now, o.AuthFailuresPerUser, o.AuthFailureWindow, o.LockoutBase, o.LockoutMax, frequency);
            accountLock = _accountFailures.GetOrAdd(subject.User, static _ => new AccountFailures())
                .Record(now, network, o.AuthFailuresPerUserAcrossNetworks, o.AuthFailureWindow, o.LockoutBase, o.LockoutMax, frequency);
            if (subject.SecretTag != 0)
            {
                var window = FailureCounter.Ticks(o.AuthFailureWindow, frequency);
                burned = _sprays.GetOrAdd(subject.SecretTag, static _ => new SprayCounter()).Record(subject.User, now, window, o.SprayAccountsPerPassword);
                if (burned)
                {
                    Extend(ref _spraysUntil, now + window);
                }
            }
        }

        var longest = Max(Max(ipLock, netLock), Max(userLock, accountLock));
        if (longest > TimeSpan.Zero)
        {
            Extend(ref _locksUntil, now + FailureCounter.Ticks(longest, frequency));
        }

        return new AuthFailureOutcome(ipLock > TimeSpan.Zero, userLock > TimeSpan.Zero, longest)
        {
            NetworkLocked = netLock > TimeSpan.Zero,
            PasswordBurned = burned,
            AccountLocked = accountLock > TimeSpan.Zero,
        };
    }

    public void RecordAuthSuccess(in LimitSubject subject)
    {
        // The IP and the network keep their failures; the success counts against their share: one good
        // account among many bad ones does not clear a spraying IP, hundreds of good logins keep a NAT open.
        var now = _time.GetTimestamp();
        var window = FailureCounter.Ticks(_options.AuthFailureWindow, _time.TimestampFrequency);
        var network = subject.Address.Network();
        if (_hostFailures.TryGetValue(subject.Address, out var ip))
        {
            ip.Good(now, window);
        }

        if (_hostFailures.TryGetValue(network, out var net))
        {
            net.Good(now, window);
        }

        if (_userFailures.TryGetValue((subject.User, network), out var state))
        {
            state.ClearFailures();
        }

        Remember(subject.User, network, now, now, now);
    }

    /// <summary>
    /// Networks accounts logged in from before this process started, with their first and last login
    /// there; the most recently used per account win.
    /// </summary>
    public void RememberLogins(IEnumerable<(string User, AddressKey Network, DateTime First, DateTime Last)> logins)
    {
        var now = _time.GetTimestamp();
        var utcNow = _time.GetUtcNow().UtcDateTime;
        long Ago(DateTime at) => now - FailureCounter.Ticks(utcNow > at ? utcNow - at : TimeSpan.Zero, _time.TimestampFrequency);
        foreach (var (user, network, first, last) in logins)
        {
            if (utcNow - last < _options.KnownNetworkTtl)
            {
                Remember(user, network, Ago(first < last ? first : last), Ago(last), now);
            }
        }
    }

    private void Remember(string user, AddressKey network, long first, long last, long now)
    {
        if (user.Length > 0)
        {
            _known.GetOrAdd(user, static _ => new KnownNetworks()).Add(network, first, last, now, Period);
        }
    }

    public HoldOutcome RecordUnknownRecipient(in LimitSubject subject)
    {
        var now = _time.GetTimestamp();
        var clock = new CheckClock(_time, now);
        if ((HostHeld(subject, ref clock) ?? UserHeld(subject, ref clock)) is { } already)
        {
            return new HoldOutcome(true, already, TimeSpan.Zero);
        }

        var o = _options;
        var frequency = _time.TimestampFrequency;
        Sweep(now);
        var held = HoldOutcome.None;
        var rule = new RatioRule(0, o.UnknownRecipientShare, o.UnknownRecipientWindow, o.HoldDuration, Max(o.HoldDuration, o.LockoutMax), o.DeliveredHistoryCredit, HistoryHalfLife);
        void Count(RatioCounter counter, int threshold, string scope)
        {
            var duration = counter.Bad(now, rule with { Threshold = threshold }, frequency);
            if (duration > TimeSpan.Zero)
            {
                Extend(ref _holdsUntil, now + RatioCounter.Ticks(duration, frequency));
                held = held.Held ? held : new HoldOutcome(true, scope, duration);
            }
        }

        var network = subject.Address.Network();
        Count(_hostUnknowns.GetOrAdd(subject.Address, static _ => new RatioCounter()), o.UnknownRecipientsPerIp, "ip " + subject.Address);
        Count(_hostUnknowns.GetOrAdd(network, static _ => new RatioCounter()), o.UnknownRecipientsPerNetwork, "network " + network);
        if (subject.User.Length > 0)
        {
            Count(_userUnknowns.GetOrAdd(subject.User, static _ => new RatioCounter()), o.UnknownRecipientsPerUser, "user");
        }

        return held;
    }

    /// <summary>
    /// A recipient that exists (or is relayed): counted against the unknown ones' share, for entities
    /// that already have unknown recipients on record (others have no share to keep).
    /// </summary>
    public void RecordKnownRecipient(in LimitSubject subject)
    {
        if (_hostUnknowns.IsEmpty && _userUnknowns.IsEmpty)
        {
            return;
        }

        var now = _time.GetTimestamp();
        var window = RatioCounter.Ticks(_options.UnknownRecipientWindow, _time.TimestampFrequency);
        if (_hostUnknowns.TryGetValue(subject.Address, out var ip))
        {
            ip.Good(now, window);
        }

        if (_hostUnknowns.TryGetValue(subject.Address.Network(), out var net))
        {
            net.Good(now, window);
        }

        if (subject.User.Length > 0 && _userUnknowns.TryGetValue(subject.User, out var user))
        {
            user.Good(now, window);
        }
    }

    /// <summary>Recent deliveries of the IP or the account (the larger), up to the history credit.</summary>
    public double DeliveredCredit(in LimitSubject subject)
    {
        if (_hostUnknowns.IsEmpty && _userUnknowns.IsEmpty)
        {
            return 0;
        }

        var now = _time.GetTimestamp();
        var halfLife = RatioCounter.Ticks(HistoryHalfLife, _time.TimestampFrequency);
        var credit = _hostUnknowns.TryGetValue(subject.Address, out var ip) ? ip.History(now, halfLife) : 0;
        if (subject.User.Length > 0 && _userUnknowns.TryGetValue(subject.User, out var user))
        {
            credit = Math.Max(credit, user.History(now, halfLife));
        }

        return Math.Min(credit, _options.DeliveredHistoryCredit);
    }

    /// <summary>A message accepted for <paramref name="recipients"/> recipients: history that vouches for the IP, its network and the account.</summary>
    public void RecordDelivery(in LimitSubject subject, int recipients)
    {
        if (recipients <= 0)
        {
            return;
        }

        var now = _time.GetTimestamp();
        var halfLife = RatioCounter.Ticks(HistoryHalfLife, _time.TimestampFrequency);
        Sweep(now);
        _hostUnknowns.GetOrAdd(subject.Address, static _ => new RatioCounter()).Delivered(now, recipients, halfLife);
        _hostUnknowns.GetOrAdd(subject.Address.Network(), static _ => new RatioCounter()).Delivered(now, recipients, halfLife);
        if (subject.User.Length > 0)
        {
            _userUnknowns.GetOrAdd(subject.User, static _ => new RatioCounter()).Delivered(now, recipients, halfLife);
        }
    }

    // Forgets entries that hold nothing (no failure in the window, no lock, no back-off to remember),
    // so maps keyed by attacker-chosen addresses, names and passwords stay as small as the attack.
    private void Sweep(long now)
    {
        if (Entries < SweepThreshold)
        {
            return;
        }

        var frequency = _time.TimestampFrequency;
        var window = FailureCounter.Ticks(_options.AuthFailureWindow > _options.UnknownRecipientWindow ? _options.AuthFailureWindow : _options.UnknownRecipientWindow, frequency);
        var last = Volatile.Read(ref _lastSweep);
        if (now - last < window / 10 || Interlocked.CompareExchange(ref _lastSweep, now, last) != last)
        {
            return;
        }

        var halfLife = RatioCounter.Ticks(HistoryHalfLife, frequency);
        SweepMap(_hostFailures, now, window, halfLife);
        foreach (var (key, counter) in _userFailures)
        {
            if (counter.IsStale(now, window))
            {
                _userFailures.TryRemove(new KeyValuePair<(string, AddressKey), FailureCounter>(key, counter));
            }
        }

        foreach (var (user, wrong) in _wrongPasswords)
        {
            if (wrong.IsStale(now, window))
            {
                _wrongPasswords.TryRemove(new KeyValuePair<string, WrongPasswords>(user, wrong));
            }
        }

        foreach (var (user, account) in _accountFailures)
        {
            if (account.IsStale(now, window))
            {
                _accountFailures.TryRemove(new KeyValuePair<string, AccountFailures>(user, account));
            }
        }

        SweepMap(_hostUnknowns, now, window, halfLife);
        SweepMap(_userUnknowns, now, window, halfLife);
        foreach (var (tag, state) in _sprays)
        {
            if (state.IsStale(now, window))
            {
                _sprays.TryRemove(tag, out _);
            }
        }
    }

    private static void SweepMap<TKey>(ConcurrentDictionary<TKey, RatioCounter> map, long now, long window, long halfLife)
        where TKey : notnull
    {
        foreach (var (key, counter) in map)
        {
            if (counter.IsStale(now, window, halfLife))
            {
                map.TryRemove(new KeyValuePair<TKey, RatioCounter>(key, counter));
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

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>How long delivered mail keeps vouching for a sender: it counts half after six hours.</summary>
    internal static readonly TimeSpan HistoryHalfLife = TimeSpan.FromHours(6);

    /// <summary>The wrong passwords (keyed tags) tried against one account in the window, to tell a retry from a guess.</summary>
    private sealed class WrongPasswords
    {
        private readonly List<(ulong Tag, long At)> _tags = [];
        private long _last;

        public bool IsStale(long now, long window) => now - Volatile.Read(ref _last) > window;

        /// <summary>Records the tag; true when it was already on record in the window.</summary>
        public bool Repeats(ulong tag, long now, long window)
        {
            lock (_tags)
            {
                Volatile.Write(ref _last, now);
                _tags.RemoveAll(t => now - t.At > window);
                var seen = _tags.RemoveAll(t => t.Tag == tag) > 0;
                _tags.Add((tag, now));
                return seen;
            }
        }
    }

    /// <summary>
    /// Failures against one account over all networks: locked once there are too many from more than
    /// one network (one network alone is the per-network counter's business).
    /// </summary>
    private sealed class AccountFailures
    {
        private readonly Queue<(long At, AddressKey Network)> _failures = new();
        private long _lockedUntil;
        private long _lastLockEnd;
        private long _last;
        private int _level;

        public bool IsLocked(long now) => now < Volatile.Read(ref _lockedUntil);

        public bool IsStale(long now, long window) => now - Volatile.Read(ref _last) > window && now - Volatile.Read(ref _lastLockEnd) > window;

        public TimeSpan Record(long now, AddressKey network, int threshold, TimeSpan windowSpan, TimeSpan lockBase, TimeSpan lockMax, long frequency)
        {
            lock (_failures)
            {
                Volatile.Write(ref _last, now);
                var window = FailureCounter.Ticks(windowSpan, frequency);
                while (_failures.Count > 0 && now - _failures.Peek().At > window)
                {
                    _failures.Dequeue();
                }

                _failures.Enqueue((now, network));
                if (_failures.Count < threshold || _failures.All(f => f.Network == network))
                {
                    return TimeSpan.Zero;
                }

                if (_lastLockEnd != 0 && now - _lastLockEnd > window)
                {
                    _level = 0;
                }

                var duration = TimeSpan.FromTicks(Math.Min(lockBase.Ticks * (1L << Math.Min(_level, 20)), lockMax.Ticks));
                _level++;
                _failures.Clear();
                var until = now + FailureCounter.Ticks(duration, frequency);
                Volatile.Write(ref _lastLockEnd, until);
                Volatile.Write(ref _lockedUntil, until);
                return duration;
            }
        }
    }

    /// <summary>
    /// The networks an account logged in from, with its first and last login there, most recently used
    /// first; a handful per account (owners have few). When full, a network still new to the account
    /// goes before one it has used longer, so an attacker rotating addresses cannot push its owner's out.
    /// </summary>
    private sealed class KnownNetworks
    {
        private const int Max = 8;
        private readonly List<(AddressKey Network, long First, long Last)> _networks = [];

        public void Add(AddressKey network, long first, long last, long now, long period)
        {
            lock (_networks)
            {
                var i = _networks.FindIndex(n => n.Network == network);
                if (i >= 0)
                {
                    var known = _networks[i];
                    _networks.RemoveAt(i);
                    first = Math.Min(first, known.First);
                    last = Math.Max(last, known.Last);
                }
                else if (_networks.Count == Max)
                {
                    var newest = _networks.FindLastIndex(n => now - n.First < period);
                    _networks.RemoveAt(newest >= 0 ? newest : _networks.Count - 1);
                }

                var position = _networks.FindIndex(n => n.Last < last);
                _networks.Insert(position < 0 ? _networks.Count : position, (network, first, last));
            }
        }

        public bool Contains(AddressKey network, long now, long ttl)
        {
            lock (_networks)
            {
                return _networks.Exists(n => n.Network == network && now - n.Last < ttl);
            }
        }

        /// <summary>Whether <paramref name="network"/> is new to the account (or unknown) while another, older one is its own.</summary>
        public bool IsNew(AddressKey network, long now, long ttl, long period)
        {
            lock (_networks)
            {
                var older = false;
                foreach (var n in _networks)
                {
                    if (now - n.Last >= ttl || now - n.First < period)
                    {
                        continue;
                    }

                    if (n.Network == network)
                    {
                        return false;
                    }

                    older = true;
                }

                return older;
            }
        }
    }

    /// <summary>The accounts one password (by its tag) failed against recently; burned once there are too many.</summary>
    private sealed class SprayCounter
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
