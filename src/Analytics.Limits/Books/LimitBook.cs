using System.Collections.Concurrent;
using System.Collections.Frozen;
using Microsoft.Extensions.Options;

namespace Analytics.Limits;

/// <summary>
/// The one limit book: at each enforcement point it answers from, in this order, the dynamic limits
/// (verdicts and reviewers' overrides, swapped in whole by <see cref="Replace"/>), the fixed caps and
/// blocks of configuration (<see cref="FixedLimitOptions"/>), and the fast path (<see cref="FastPath"/>).
/// Reads take immutable snapshots keyed without allocating (accounts by canonical name, addresses and
/// networks by <see cref="AddressKey"/>); rates are <see cref="TokenBucket"/>s, one per entity and rate.
/// </summary>
public sealed class LimitBook : ILimitBook
{
    private readonly SessionLimitOptions _session;
    private readonly FixedLimitOptions _fixedOptions;
    private readonly int _newNetworkMessagesPerMinute;
    private readonly TimeProvider _time;
    private readonly long _frequency;
    private readonly FastPath _fastPath;
    private readonly AddressKey[] _blockedNetworks;
    private readonly FrozenSet<string> _blockedUsers;
    private readonly ConcurrentDictionary<string, FixedBuckets> _fixed = new(StringComparer.Ordinal);
    private Snapshot _snapshot = Snapshot.Empty;

    public LimitBook(IOptions<LimitsOptions> options, TimeProvider time)
        : this(options.Value, time)
    {
    }

    public LimitBook(LimitsOptions options, TimeProvider time)
    {
        _session = options.Session;
        _fixedOptions = options.Fixed;
        _newNetworkMessagesPerMinute = options.FastPath.NewNetworkMessagesPerMinute;
        _time = time;
        _frequency = time.TimestampFrequency;
        _fastPath = new FastPath(options.FastPath, time);
        _blockedNetworks = [.. options.Fixed.BlockedNetworks.Select(n => AddressKey.TryParseNetwork(n, out var key) ? key : throw new FormatException($"'{n}' is not an IP address or CIDR network."))];
        _blockedUsers = options.Fixed.BlockedUsers.Select(AccountName.Normalize).ToFrozenSet(StringComparer.Ordinal);
    }

    /// <summary>Dynamic limits in force (not normal ones; overrides included), for inspection.</summary>
    public IReadOnlyCollection<EntityLimit> Limits => Volatile.Read(ref _snapshot).All;

    /// <summary>Entries the fast path holds in memory (AUTH failures, sprays, unknown-recipient counts).</summary>
    public int FastPathEntries => _fastPath.Entries;

    /// <summary>Swaps in the dynamic limits (normal ones are dropped). Buckets of unchanged entities keep their state.</summary>
    public void Replace(IEnumerable<EntityLimit> limits)
    {
        var old = Volatile.Read(ref _snapshot);
        // Overrides stay even when "normal" (allow): they exempt the account from the fixed rates.
        var active = limits.Where(l => !l.IsNormal || l.Source == LimitSource.Override).ToList();
        var users = new Dictionary<string, Entry>(StringComparer.Ordinal);
        var hosts = new Dictionary<AddressKey, Entry>();
        foreach (var limit in active)
        {
            switch (limit.Entity.Kind)
            {
                case EntityKind.User:
                    users[limit.Entity.Name] = Reuse(old.Users.GetValueOrDefault(limit.Entity.Name), limit);
                    break;
                case EntityKind.Ip or EntityKind.Net when AddressKey.TryParseNetwork(limit.Entity.Name, out var key):
                    hosts[key] = Reuse(old.Hosts.GetValueOrDefault(key), limit);
                    break;
            }
        }

        // The network prefixes in force, longest first: a lookup tries each (usually none or /24).
        var prefixes = hosts.Keys.Where(k => k.Prefix < 128).Select(k => k.IsV4 ? k.Prefix - 96 : k.Prefix)
            .Distinct().OrderDescending().ToArray();
        Volatile.Write(ref _snapshot, new Snapshot(users.ToFrozenDictionary(StringComparer.Ordinal), hosts.ToFrozenDictionary(), prefixes, active));
    }

    private static Entry Reuse(Entry? old, EntityLimit limit) => old is not null && old.Limit.Version == limit.Version ? old : new Entry(limit);

    public LimitDecision CheckConnect(LimitSubject subject)
    {
        var (host, _) = Resolve(Volatile.Read(ref _snapshot), subject);
        if (host is { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Block, host.Limit.Tarpit, host.Limit.Reason);
        }

        var tarpit = host?.Limit.Tarpit ?? TimeSpan.Zero;
        foreach (var network in _blockedNetworks)
        {
            if (network.Contains(subject.Address))
            {
                return new LimitDecision(LimitAction.Block, tarpit, "blocked network " + network);
            }
        }

        var clock = new CheckClock(_time);
        return _fastPath.HostHeld(subject, ref clock) is { } why
            ? new LimitDecision(LimitAction.TempFail, tarpit, why)
            : new LimitDecision(LimitAction.Allow, tarpit, "");
    }

    public LimitDecision CheckAuth(LimitSubject subject)
    {
        var (host, user) = Resolve(Volatile.Read(ref _snapshot), subject);
        var tarpit = Max(host?.Limit.Tarpit, user?.Limit.Tarpit);
        if (host is { Limit.AuthLocked: true } or { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Lock, tarpit, host.Limit.Reason);
        }

        if (user is { Limit.AuthLocked: true })
        {
            return new LimitDecision(LimitAction.Lock, tarpit, user.Limit.Reason);
        }

        var clock = new CheckClock(_time);
        if (_fastPath.AuthRefusal(subject, ref clock) is { } why)
        {
            return new LimitDecision(LimitAction.Lock, tarpit, why);
        }

        return subject.User.Length > 0 && _blockedUsers.Count > 0 && _blockedUsers.Contains(subject.User)
            ? new LimitDecision(LimitAction.Lock, tarpit, "user blocked")
            : new LimitDecision(LimitAction.Allow, tarpit, "");
    }

    public LimitDecision CheckMail(LimitSubject subject)
    {
        var (host, user) = Resolve(Volatile.Read(ref _snapshot), subject);
        var tarpit = Max(host?.Limit.Tarpit, user?.Limit.Tarpit);
        if ((host ?? user) is not null && Blocked(host, user) is { } blocked)
        {
            return new LimitDecision(LimitAction.Block, tarpit, blocked.Limit.Reason);
        }

        var clock = new CheckClock(_time);
        if (user?.Limit.MessagesPerMinute is { } perMinute && !user.Messages.TryTake(perMinute, OneMinute, clock.Now, _frequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, user.Limit.Reason);
        }

        if (host?.Limit.MessagesPerMinute is { } hostPerMinute && !host.Messages.TryTake(hostPerMinute, OneMinute, clock.Now, _frequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, host.Limit.Reason);
        }

        if ((_fastPath.HostHeld(subject, ref clock) ?? _fastPath.UserHeld(subject, ref clock)) is { } held)
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, held);
        }

        if (subject.User.Length == 0)
        {
            return new LimitDecision(LimitAction.Allow, tarpit, "");
        }

        if (_blockedUsers.Count > 0 && _blockedUsers.Contains(subject.User))
        {
            return new LimitDecision(LimitAction.Block, tarpit, "user blocked");
        }

        // A reviewer's override sets the account's own rates: the fixed ones do not apply to it.
        if (_fixedOptions.MessagesPerMinute > 0 && user is not { Limit.Source: LimitSource.Override }
            && !Fixed(subject).Messages.TryTake(_fixedOptions.MessagesPerMinute, OneMinute, clock.Now, _frequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, "message rate exceeded");
        }

        // From a network new to an account that has one of its own, its messages share a lower rate:
        // a taken-over account's burst from the attacker's address is held before the model has seen it.
        if (_newNetworkMessagesPerMinute > 0 && user is not { Limit.Source: LimitSource.Override } && IsNewNetwork(subject, clock.Now)
            && !Fixed(subject).NewNetworkMessages.TryTake(_newNetworkMessagesPerMinute, OneMinute, clock.Now, _frequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, "message rate from a new network exceeded");
        }

        return new LimitDecision(LimitAction.Allow, tarpit, "");
    }

    public LimitDecision CheckRcpt(LimitSubject subject, int recipientsInMessage)
    {
        var (host, user) = Resolve(Volatile.Read(ref _snapshot), subject);
        var tarpit = Max(host?.Limit.Tarpit, user?.Limit.Tarpit);
        if ((host ?? user) is not null && Blocked(host, user) is { } blocked)
        {
            return new LimitDecision(LimitAction.Block, tarpit, blocked.Limit.Reason);
        }

        var perMessage = Math.Min(user?.Limit.RecipientsPerMessage ?? int.MaxValue, host?.Limit.RecipientsPerMessage ?? int.MaxValue);
        if (recipientsInMessage >= perMessage)
        {
            return new LimitDecision(LimitAction.TooManyRecipients, tarpit, (user ?? host)!.Limit.Reason);
        }

        var clock = new CheckClock(_time);
        if (user?.Limit.RecipientsPerHour is { } perHour && !user.Recipients.TryTake(perHour, OneHour, clock.Now, _frequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, user.Limit.Reason);
        }

        if (host?.Limit.RecipientsPerHour is { } hostPerHour && !host.Recipients.TryTake(hostPerHour, OneHour, clock.Now, _frequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, host.Limit.Reason);
        }

        if ((_fastPath.HostHeld(subject, ref clock) ?? _fastPath.UserHeld(subject, ref clock)) is { } held)
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, held);
        }

        if (recipientsInMessage >= _session.MaxRecipientsPerMessage)
        {
            return new LimitDecision(LimitAction.TooManyRecipients, tarpit, "too many recipients");
        }

        if (subject.User.Length > 0 && _fixedOptions.RecipientsPerHour > 0 && user is not { Limit.Source: LimitSource.Override }
            && !Fixed(subject).Recipients.TryTake(_fixedOptions.RecipientsPerHour, OneHour, clock.Now, _frequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, "recipient rate exceeded");
        }

        return new LimitDecision(LimitAction.Allow, tarpit, "");
    }

    public AuthFailureOutcome RecordAuthFailure(LimitSubject subject) => _fastPath.RecordAuthFailure(subject);

    public void RecordAuthSuccess(LimitSubject subject) => _fastPath.RecordAuthSuccess(subject);

    public HoldOutcome RecordUnknownRecipient(LimitSubject subject) => _fastPath.RecordUnknownRecipient(subject);

    public void RecordKnownRecipient(LimitSubject subject) => _fastPath.RecordKnownRecipient(subject);

    public double DeliveredCredit(LimitSubject subject) => _fastPath.DeliveredCredit(subject);

    public void RecordDelivery(LimitSubject subject, int recipients) => _fastPath.RecordDelivery(subject, recipients);

    public bool IsOwnersNetwork(LimitSubject subject) => _fastPath.IsOwnersNetwork(subject);

    public void RememberLogins(IEnumerable<(string User, AddressKey Network, DateTime First, DateTime Last)> logins) => _fastPath.RememberLogins(logins);

    // The subject's host and user limits in this snapshot: from the session's cache when it was resolved
    // against this very snapshot for this address and account, else looked up (and cached).
    private static (Entry? Host, Entry? User) Resolve(Snapshot s, in LimitSubject subject)
    {
        if (subject.Cache is not { } cache)
        {
            return (s.Host(subject.Address), s.User(subject.User));
        }

        if (cache.Resolved is Resolved r && ReferenceEquals(r.Snapshot, s) && r.Address == subject.Address && string.Equals(r.User, subject.User, StringComparison.Ordinal))
        {
            return (r.HostEntry, r.UserEntry);
        }

        var fresh = new Resolved(s, subject.Address, subject.User, s.Host(subject.Address), s.User(subject.User));
        cache.Resolved = fresh;
        return (fresh.HostEntry, fresh.UserEntry);
    }

    // The account's fixed-rate buckets (never removed, so a session may keep them).
    private FixedBuckets Fixed(in LimitSubject subject)
    {
        if (subject.Cache?.Fixed is FixedBuckets cached && string.Equals(cached.User, subject.User, StringComparison.Ordinal))
        {
            return cached;
        }

        var buckets = _fixed.GetOrAdd(subject.User, static user => new FixedBuckets(user));
        if (subject.Cache is { } cache)
        {
            cache.Fixed = buckets;
        }

        return buckets;
    }

    // Whether the subject's network is new to its account: judged once per session (it cannot change
    // within one), by the fast path's record of the account's networks.
    private bool IsNewNetwork(in LimitSubject subject, long now)
    {
        if (subject.Cache?.Network is NewNetwork cached && cached.Address == subject.Address && string.Equals(cached.User, subject.User, StringComparison.Ordinal))
        {
            return cached.IsNew;
        }

        var isNew = _fastPath.IsNewNetwork(subject, now);
        if (subject.Cache is { } cache)
        {
            cache.Network = new NewNetwork(subject.User, subject.Address, isNew);
        }

        return isNew;
    }

    private sealed record NewNetwork(string User, AddressKey Address, bool IsNew);

    private sealed record Resolved(Snapshot Snapshot, AddressKey Address, string User, Entry? HostEntry, Entry? UserEntry);

    private sealed class FixedBuckets(string user)
    {
        public string User { get; } = user;

        public TokenBucket Messages { get; } = new();

        public TokenBucket Recipients { get; } = new();

        /// <summary>Messages from networks new to the account (<see cref="FastPathOptions.NewNetworkMessagesPerMinute"/>).</summary>
        public TokenBucket NewNetworkMessages { get; } = new();
    }

    private static readonly TimeSpan OneMinute = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan OneHour = TimeSpan.FromHours(1);

    private static Entry? Blocked(Entry? host, Entry? user) => host is { Limit.Blocked: true } ? host : user is { Limit.Blocked: true } ? user : null;

    private static TimeSpan Max(TimeSpan? a, TimeSpan? b)
    {
        var x = a ?? TimeSpan.Zero;
        var y = b ?? TimeSpan.Zero;
        return x > y ? x : y;
    }

    private sealed record Snapshot(FrozenDictionary<string, Entry> Users, FrozenDictionary<AddressKey, Entry> Hosts, int[] Prefixes, IReadOnlyCollection<EntityLimit> All)
    {
        public static Snapshot Empty { get; } = new(FrozenDictionary<string, Entry>.Empty, FrozenDictionary<AddressKey, Entry>.Empty, [], []);

        public Entry? User(string user) => user.Length > 0 && Users.Count > 0 ? Users.GetValueOrDefault(user) : null;

        /// <summary>The strictest of the address's own limit and those of the networks it lies in.</summary>
        public Entry? Host(AddressKey address)
        {
            if (Hosts.Count == 0)
            {
                return null;
            }

            var best = Hosts.GetValueOrDefault(address);
            foreach (var prefix in Prefixes)
            {
                if (Hosts.GetValueOrDefault(address.Network(prefix)) is { } net && (best is null || net.Limit.Level > best.Limit.Level))
                {
                    best = net;
                }
            }

            return best;
        }
    }

    /// <summary>A limit and its rate state. Buckets survive a snapshot swap when the limit did not change.</summary>
    private sealed class Entry(EntityLimit limit)
    {
        public EntityLimit Limit { get; } = limit;

        public TokenBucket Messages { get; } = new();

        public TokenBucket Recipients { get; } = new();
    }
}
