using System.Collections.Frozen;
using System.Net;
using System.Net.Sockets;
using Analytics.Submission;

namespace Analytics.Limits;

/// <summary>
/// The listener's limit book with the dynamic limits in front of the static one. Reads take an
/// immutable snapshot (frozen dictionaries keyed without allocating: users case-insensitively, IPs
/// and networks as 128-bit numbers) swapped atomically by <see cref="Replace"/>; rates are token
/// buckets per entity, each guarded by its own uncontended lock (no allocation per check). What the
/// dynamic limits allow goes on to the static book: configuration and the AUTH fast path.
/// </summary>
public sealed class DynamicLimitBook : ILimitBook
{
    private readonly ILimitBook _inner;
    private readonly TimeProvider _time;
    private Snapshot _snapshot = Snapshot.Empty;

    public DynamicLimitBook(ILimitBook inner, TimeProvider time)
    {
        _inner = inner;
        _time = time;
    }

    /// <summary>Limits in force (non-normal only), for inspection.</summary>
    public IReadOnlyCollection<EntityLimit> Limits => Volatile.Read(ref _snapshot).All;

    /// <summary>Swaps in a new set of limits (normal ones are dropped). Buckets of unchanged entities keep their state.</summary>
    public void Replace(IEnumerable<EntityLimit> limits)
    {
        var old = Volatile.Read(ref _snapshot);
        // Overrides stay even when "normal" (allow): they exempt the user from the configured rates.
        var active = limits.Where(l => !l.IsNormal || l.Source == LimitSource.Override).ToList();
        var users = new Dictionary<string, Entry>(StringComparer.OrdinalIgnoreCase);
        var hosts = new Dictionary<UInt128, Entry>();
        foreach (var limit in active)
        {
            switch (limit.Entity.Kind)
            {
                case EntityKinds.User:
                    users[limit.Entity.Name] = Reuse(old.Users.GetValueOrDefault(limit.Entity.Name), limit);
                    break;
                case EntityKinds.Ip when TryParseIp(limit.Entity.Name, out var ip):
                    hosts[IpKey(ip)] = Reuse(old.Hosts.GetValueOrDefault(IpKey(ip)), limit);
                    break;
                case EntityKinds.Net when TryParseNet(limit.Entity.Name, out var net):
                    hosts[net] = Reuse(old.Hosts.GetValueOrDefault(net), limit);
                    break;
            }
        }

        Volatile.Write(ref _snapshot, new Snapshot(users.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase), hosts.ToFrozenDictionary(), active));
    }

    private static Entry Reuse(Entry? old, EntityLimit limit) => old is not null && old.Limit.Version == limit.Version ? old : new Entry(limit);

    public LimitDecision CheckConnect(LimitSubject subject)
    {
        var s = Volatile.Read(ref _snapshot);
        var host = s.Host(subject.Address);
        if (host is { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Block, host.Limit.Tarpit, host.Limit.Reason);
        }

        var inner = _inner.CheckConnect(subject);
        return host is null ? inner : inner with { Tarpit = Max(inner.Tarpit, host.Limit.Tarpit) };
    }

    public LimitDecision CheckAuth(LimitSubject subject)
    {
        var s = Volatile.Read(ref _snapshot);
        var host = s.Host(subject.Address);
        var user = subject.User.Length > 0 ? s.Users.GetValueOrDefault(subject.User) : null;
        var tarpit = Max(host?.Limit.Tarpit ?? TimeSpan.Zero, user?.Limit.Tarpit ?? TimeSpan.Zero);
        if (host is { Limit.AuthLocked: true } or { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Lock, tarpit, host.Limit.Reason);
        }

        if (user is { Limit.AuthLocked: true })
        {
            return new LimitDecision(LimitAction.Lock, tarpit, user.Limit.Reason);
        }

        var inner = _inner.CheckAuth(subject);
        return inner with { Tarpit = Max(inner.Tarpit, tarpit) };
    }

    public LimitDecision CheckMail(LimitSubject subject)
    {
        var s = Volatile.Read(ref _snapshot);
        var host = s.Host(subject.Address);
        var user = subject.User.Length > 0 ? s.Users.GetValueOrDefault(subject.User) : null;
        var tarpit = Max(host?.Limit.Tarpit ?? TimeSpan.Zero, user?.Limit.Tarpit ?? TimeSpan.Zero);
        if (host is { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Block, tarpit, host.Limit.Reason);
        }

        if (user is { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Block, tarpit, user.Limit.Reason);
        }

        var now = _time.GetTimestamp();
        if (user?.Limit.MessagesPerMinute is { } perMinute && !user.Messages.TryTake(perMinute, TimeSpan.FromMinutes(1), now, _time.TimestampFrequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, user.Limit.Reason);
        }

        if (host?.Limit.MessagesPerMinute is { } hostPerMinute && !host.Messages.TryTake(hostPerMinute, TimeSpan.FromMinutes(1), now, _time.TimestampFrequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, host.Limit.Reason);
        }

        var inner = _inner.CheckMail(user is { Limit.Source: LimitSource.Override } ? subject with { OwnRates = true } : subject);
        return inner with { Tarpit = Max(inner.Tarpit, tarpit) };
    }

    public LimitDecision CheckRcpt(LimitSubject subject, int recipientsInMessage)
    {
        var s = Volatile.Read(ref _snapshot);
        var host = s.Host(subject.Address);
        var user = subject.User.Length > 0 ? s.Users.GetValueOrDefault(subject.User) : null;
        var tarpit = Max(host?.Limit.Tarpit ?? TimeSpan.Zero, user?.Limit.Tarpit ?? TimeSpan.Zero);
        if (host is { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Block, tarpit, host.Limit.Reason);
        }

        if (user is { Limit.Blocked: true })
        {
            return new LimitDecision(LimitAction.Block, tarpit, user.Limit.Reason);
        }

        var perMessage = Math.Min(user?.Limit.RecipientsPerMessage ?? int.MaxValue, host?.Limit.RecipientsPerMessage ?? int.MaxValue);
        if (recipientsInMessage >= perMessage)
        {
            return new LimitDecision(LimitAction.TooManyRecipients, tarpit, (user ?? host)!.Limit.Reason);
        }

        var now = _time.GetTimestamp();
        if (user?.Limit.RecipientsPerHour is { } perHour && !user.Recipients.TryTake(perHour, TimeSpan.FromHours(1), now, _time.TimestampFrequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, user.Limit.Reason);
        }

        if (host?.Limit.RecipientsPerHour is { } hostPerHour && !host.Recipients.TryTake(hostPerHour, TimeSpan.FromHours(1), now, _time.TimestampFrequency))
        {
            return new LimitDecision(LimitAction.TempFail, tarpit, host.Limit.Reason);
        }

        var inner = _inner.CheckRcpt(user is { Limit.Source: LimitSource.Override } ? subject with { OwnRates = true } : subject, recipientsInMessage);
        return inner with { Tarpit = Max(inner.Tarpit, tarpit) };
    }

    public AuthFailureOutcome RecordAuthFailure(LimitSubject subject) => _inner.RecordAuthFailure(subject);

    public void RecordAuthSuccess(LimitSubject subject) => _inner.RecordAuthSuccess(subject);

    public HoldOutcome RecordUnknownRecipient(LimitSubject subject) => _inner.RecordUnknownRecipient(subject);

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    // Hosts and networks share one map: an IP is its 128-bit address (IPv4 mapped), a network sets the
    // top bit (never set in a mapped IPv4 or a routable IPv6 /64 prefix we key) and keeps its prefix.
    private static readonly UInt128 NetFlag = UInt128.One << 127;

    internal static UInt128 IpKey(IPAddress address)
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

    internal static UInt128 NetKey(UInt128 ip)
    {
        var v4Mapped = (ip >> 32) == 0xffff;
        return NetFlag | (v4Mapped ? ip & ~(UInt128)0xff : ip & ~(UInt128)ulong.MaxValue);
    }

    private static bool TryParseIp(string text, out IPAddress ip) => IPAddress.TryParse(text, out ip!);

    private static bool TryParseNet(string text, out UInt128 key)
    {
        key = default;
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0 || !IPAddress.TryParse(text[..slash], out var address))
        {
            return false;
        }

        key = NetKey(IpKey(address));
        return true;
    }

    private sealed record Snapshot(FrozenDictionary<string, Entry> Users, FrozenDictionary<UInt128, Entry> Hosts, IReadOnlyCollection<EntityLimit> All)
    {
        public static Snapshot Empty { get; } = new(FrozenDictionary<string, Entry>.Empty, FrozenDictionary<UInt128, Entry>.Empty, []);

        /// <summary>The IP's own limit, else its network's; when both exist the stricter block/lock wins via the IP's entry first.</summary>
        public Entry? Host(IPAddress address)
        {
            if (Hosts.Count == 0)
            {
                return null;
            }

            var ip = IpKey(address);
            var own = Hosts.GetValueOrDefault(ip);
            var net = Hosts.GetValueOrDefault(NetKey(ip));
            if (own is null)
            {
                return net;
            }

            return net is null || own.Limit.Level >= net.Limit.Level ? own : net;
        }
    }

    /// <summary>A limit and its rate state. Buckets survive a snapshot swap when the limit did not change.</summary>
    private sealed class Entry
    {
        public Entry(EntityLimit limit)
        {
            Limit = limit;
            Messages = new Bucket();
            Recipients = new Bucket();
        }

        public EntityLimit Limit { get; }

        public Bucket Messages { get; }

        public Bucket Recipients { get; }
    }

    /// <summary>A token bucket: capacity = one period's allowance, refilled continuously. Locks only itself.</summary>
    private sealed class Bucket
    {
        private readonly Lock _gate = new();
        private double _tokens = double.NaN;
        private long _stamp;

        public bool TryTake(double perPeriod, TimeSpan period, long now, long frequency)
        {
            lock (_gate)
            {
                var capacity = Math.Max(1, perPeriod);
                _tokens = double.IsNaN(_tokens)
                    ? capacity
                    : Math.Min(capacity, _tokens + ((now - _stamp) / (double)frequency * perPeriod / period.TotalSeconds));
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
}
