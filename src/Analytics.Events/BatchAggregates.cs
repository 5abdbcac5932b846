using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Analytics.Events;

/// <summary>
/// The per-minute detection aggregates of one batch, computed where the batch already is. This is what
/// the materialized views on <c>events</c> used to compute for every insert (migration 0010), with the
/// same definitions: one <c>activity</c> row per (user | client IP | network, minute) and one
/// <c>first_seen</c> row per (user, IP | network | recipient | domain | client, the last its
/// <see cref="ClientFingerprint"/> at login, migration 0062). The distinct counts are kept as
/// the hashes ClickHouse's <c>uniq</c> keeps and written as finished <c>uniq</c> states (see
/// <see cref="UniqState"/>) straight into <c>activity</c> and <c>activity_hourly</c>: turning arrays of
/// values into states in a view (<c>activity_in_mv</c>, 0030) cost the engine more than the events
/// themselves. Not thread-safe; reused batch after batch.
/// </summary>
internal sealed class BatchAggregates
{
    public const string ActivityTable = "activity";
    public const string HourlyTable = "activity_hourly";

    // Where frames written before the states were built here (EVB2) send the same rows, as arrays.
    public const string LegacyActivityTable = "activity_in";
    public const string LegacyHourlyTable = "activity_hourly_in";
    public const string ActiveTable = "active_entities";
    public const string FirstSeenTable = "first_seen";

    private const string EntityKindType = "Enum8('user' = 1, 'ip' = 2, 'net' = 3)";
    private const string SeenKindType = "Enum8('ip' = 1, 'net' = 2, 'recipient' = 3, 'domain' = 4, 'client' = 5)";
    private const byte SeenIp = 1, SeenNet = 2, SeenRecipient = 3, SeenDomain = 4, SeenClient = 5;

    private const string Sum = "SimpleAggregateFunction(sum, UInt64)";

    private static readonly (string Name, string Type)[] Counters =
    [
        ("events", Sum), ("auth_attempts", Sum), ("auth_failures", Sum), ("rcpt", Sum), ("rcpt_rejected", Sum), ("rcpt_unknown", Sum),
        ("messages", Sum), ("message_rcpts", Sum), ("max_message_rcpts", "SimpleAggregateFunction(max, UInt64)"), ("invalid_commands", Sum),
        ("throttled", Sum),

        // Migration 0040: the client's fingerprint, success after failures, the fate of delivered mail.
        ("null_senders", Sum), ("rsets", Sum), ("closes", Sum), ("quits", Sum), ("session_ms", Sum), ("session_commands", Sum),
        ("helo_literal", Sum), ("helo_bare", Sum), ("tls", Sum), ("auth_login", Sum), ("auth_ok_after_fail", Sum), ("sent_after_fail", Sum),
        ("deliveries", Sum), ("delivery_failures", Sum),
    ];

    // The uniq columns of activity, in the order WriteActivity fills them.
    private static readonly (string Name, string Type)[] States =
    [
        ("users_tried", "AggregateFunction(uniq, String)"), ("ips", "AggregateFunction(uniq, IPv6)"), ("nets", "AggregateFunction(uniq, String)"),
        ("recipients", "AggregateFunction(uniq, String)"), ("recipient_domains", "AggregateFunction(uniq, String)"),
        ("sessions", "AggregateFunction(uniq, UInt64)"), ("data_sessions", "AggregateFunction(uniq, UInt64)"),
        ("passwords", "AggregateFunction(uniq, UInt64)"), ("failed_passwords", "AggregateFunction(uniq, UInt64)"),
    ];

    // What this sink has seen of each open session (its events arrive in order, in one batch or a few
    // consecutive ones, so the marks outlive a batch): whether it greeted, and whether an AUTH failed
    // before one succeeded. A session's entry goes at its close; if closes go missing (a crash of the
    // listener), the whole map is dropped past MaxOpenSessions, which loses marks, never memory.
    private readonly Dictionary<ulong, SessionMarks> _sessions = [];
    private const int MaxOpenSessions = 100_000;

    private readonly Dictionary<(string User, uint Minute), Activity> _users = [];
    private readonly Dictionary<(UInt128 Ip, uint Minute), Activity> _ips = [];
    private readonly Dictionary<(UInt128 Net, uint Minute), Activity> _nets = [];
    private readonly Dictionary<(string User, byte Kind, UInt128 Address), Seen> _seenAddresses = [];
    private readonly Dictionary<(string User, byte Kind, string Value), Seen> _seenValues = [];

    // Text of addresses, made once per distinct address of the batch; a network's uniq hash (of that text).
    private readonly Dictionary<UInt128, string> _ipText = [];
    private readonly Dictionary<UInt128, uint> _netHashes = [];
    private uint[] _hashScratch = new uint[64];
    private readonly List<Activity> _pool = [];
    private int _pooled;

    // The rows (and hashes) the previous event counted in; see Add.
    private Activity? _lastIpRow, _lastNetRow, _lastUserRow;
    private UInt128 _lastIp;
    private uint _lastMinute, _lastUserMinute, _lastIpHash, _lastNetHash;
    private string? _lastUser;

    // Column buffers and hourly rows, reused batch after batch: fresh ones were tens of MB of large
    // objects per batch, and the full collections they caused cost more than the encoding itself.
    private readonly List<NativeColumn> _columns = [];
    private int _columnsUsed;
    private readonly List<Hour> _hourPool = [];
    private int _hoursUsed;

    // The minute rows in the tables' sort key order (see SortedRows); stale once a row is added.
    private MinuteRow[] _sorted = [];
    private MinuteRow[] _unsorted = [];
    private RowKey[] _rowKeys = [];
    private int _sortedCount = -1;
    private readonly List<(byte Kind, string Entity, uint Hour)> _hourKeys = [];

    private NativeColumn Column()
    {
        if (_columnsUsed == _columns.Count)
        {
            _columns.Add(new NativeColumn(1 << 16));
        }

        var column = _columns[_columnsUsed++];
        column.Length = 0;
        return column;
    }

    public int ActivityRows => _users.Count + _ips.Count + _nets.Count;

    public int FirstSeenRows => _seenAddresses.Count + _seenValues.Count;

    public void Reset()
    {
        _users.Clear();
        _ips.Clear();
        _nets.Clear();
        _seenAddresses.Clear();
        _seenValues.Clear();
        _ipText.Clear();
        _netHashes.Clear();
        if (_sessions.Count > MaxOpenSessions)
        {
            _sessions.Clear();
        }
        _ipEntities.Clear();
        _netEntities.Clear();
        _pooled = 0;
        _sortedCount = -1;
        _lastIpRow = _lastNetRow = _lastUserRow = null;
    }

    public void Add(SmtpEvent e)
    {
        var ms = e.Timestamp.ToUnixTimeMilliseconds();
        var minute = (uint)Math.Max(0, Math.Floor(ms / 60_000.0) * 60);
        var ip = IpText.ToUInt128(e.ClientIp);
        var net = IpText.Network(ip);
        var user = e.User.Length == 0 ? "" : NativeColumn.Stored(e.User);

        // Delivery attempts happen after the session, on the server's own schedule: they are not the
        // client's activity (events per minute, burstiness, sessions); only the delivery counts read them.
        if (e.Kind == EventKind.Delivery)
        {
            var failed = e.Outcome == EventOutcome.Reject;
            if (user.Length != 0)
            {
                Get(_users, (user, minute)).Delivered(failed);
            }

            Get(_ips, (ip, minute)).Delivered(failed);
            Get(_nets, (net, minute)).Delivered(failed);
            return;
        }

        // Consecutive events of one client in one minute (a session's, mostly) count in the same rows:
        // those of the previous event are kept, and the dictionaries only asked when the key changes.
        if (_lastIpRow is null || ip != _lastIp || minute != _lastMinute)
        {
            _lastIpRow = Get(_ips, (ip, minute));
            _lastNetRow = Get(_nets, (net, minute));
            _lastIp = ip;
            _lastMinute = minute;
            _lastIpHash = UniqState.OfIPv6(ip);
            _lastNetHash = NetHash(net);
        }

        var (ipRow, netRow, ipHash, netHash) = (_lastIpRow, _lastNetRow!, _lastIpHash, _lastNetHash);
        var marks = Marks(e);
        var recipient = e.Kind == EventKind.Rcpt ? NativeColumn.Stored(e.Recipient) : "";
        var domain = e.Kind == EventKind.Rcpt ? NativeColumn.Stored(e.RecipientDomain) : "";
        var recipients = e.Kind == EventKind.Data && e.Outcome == EventOutcome.Ok ? MessageRecipients(e.Detail) : 0;

        // The uniq hashes of the event's values, once for the three rows it counts in.
        var hashes = new Hashes
        {
            Ip = ipHash,
            Net = netHash,
            Session = UniqState.OfUInt64(e.SessionId),
            User = e.Kind == EventKind.Auth && user.Length != 0 ? UniqState.OfString(user) : 0,
            Recipient = e.Kind == EventKind.Rcpt ? UniqState.OfString(recipient) : 0,
            Domain = domain.Length != 0 ? UniqState.OfString(domain) : 0,
            Password = e.SecretTag != 0 ? UniqState.OfUInt64(e.SecretTag) : 0,
        };

        if (user.Length != 0)
        {
            if (_lastUserRow is null || minute != _lastUserMinute || !string.Equals(user, _lastUser, StringComparison.Ordinal))
            {
                _lastUserRow = Get(_users, (user, minute));
                _lastUser = user;
                _lastUserMinute = minute;
            }

            _lastUserRow.Add(e, user, domain, recipients, marks, in hashes);
        }

        ipRow.Add(e, user, domain, recipients, marks, in hashes);
        netRow.Add(e, user, domain, recipients, marks, in hashes);

        if (user.Length == 0 || e.Outcome != EventOutcome.Ok)
        {
            return;
        }

        if (e.Kind == EventKind.Auth)
        {
            See(ref CollectionsMarshal.GetValueRefOrAddDefault(_seenAddresses, (user, SeenIp, ip), out _), ms);
            See(ref CollectionsMarshal.GetValueRefOrAddDefault(_seenAddresses, (user, SeenNet, net), out _), ms);
            if (_sessions.TryGetValue(e.SessionId, out var session) && session.Greeted)
            {
                var client = ClientFingerprint(session.HeloName ?? "", session.TlsProtocol ?? "", session.TlsCipher ?? "", e.Mechanism);
                See(ref CollectionsMarshal.GetValueRefOrAddDefault(_seenValues, (user, SeenClient, client), out _), ms);
            }
        }
        else if (e.Kind == EventKind.Rcpt)
        {
            if (recipient.Length != 0)
            {
                See(ref CollectionsMarshal.GetValueRefOrAddDefault(_seenValues, (user, SeenRecipient, recipient), out _), ms);
            }

            if (domain.Length != 0)
            {
                See(ref CollectionsMarshal.GetValueRefOrAddDefault(_seenValues, (user, SeenDomain, domain), out _), ms);
            }
        }
    }

    /// <summary>
    /// The client software an account logs in with, as far as the server can tell: its EHLO name (an
    /// address literal as <c>[literal]</c>, since it follows the network the device is on), the TLS
    /// protocol and cipher suite of its STARTTLS (none: <c>plain</c>) and the AUTH mechanism, e.g.
    /// <c>desktop-7f3a Tls13/TLS_AES_256_GCM_SHA384 PLAIN</c>. An owner's few devices give the same
    /// few values day after day; a taken-over account used from the attacker's tooling usually adds one.
    /// </summary>
    public static string ClientFingerprint(string helo, string tlsProtocol, string cipher, string mechanism)
    {
        var name = helo.StartsWith('[') ? "[literal]" : helo.Length > 64 ? helo[..64] : helo;
        var tls = tlsProtocol.Length == 0 ? "plain" : cipher.Length == 0 ? tlsProtocol : tlsProtocol + "/" + cipher;
        return string.Concat(name.ToLowerInvariant(), " ", tls, " ", mechanism.Length == 0 ? "-" : mechanism);
    }

    /// <summary>
    /// What this event adds to its session's marks, and the marks that apply to it. The fingerprint
    /// (EHLO style, STARTTLS) is counted on the session's close, which carries the account it logged in
    /// as: EHLO and STARTTLS come before AUTH, so counted there they would never reach the account.
    /// </summary>
    private SessionFlags Marks(SmtpEvent e)
    {
        ref var marks = ref CollectionsMarshal.GetValueRefOrAddDefault(_sessions, e.SessionId, out _);
        var flags = SessionFlags.None;
        switch (e.Kind)
        {
            case EventKind.Ehlo when !marks.Greeted:
                marks.Greeted = true;
                marks.HeloName = e.Detail;
                marks.Helo = e.Detail.StartsWith('[') ? SessionFlags.HeloLiteral : !e.Detail.Contains('.', StringComparison.Ordinal) ? SessionFlags.HeloBare : SessionFlags.None;
                break;
            case EventKind.StartTls when e.Outcome == EventOutcome.Ok:
                marks.Tls = true;
                marks.TlsProtocol = e.Mechanism;
                marks.TlsCipher = e.Detail;
                break;
            case EventKind.Auth when e.Outcome == EventOutcome.Ok:
                if (marks.AuthFailed)
                {
                    marks.OkAfterFail = true;
                    flags |= SessionFlags.OkAfterFail;
                }

                break;
            case EventKind.Auth when e.ReplyCode == 535:
                marks.AuthFailed = true;
                break;
            case EventKind.Data when e.Outcome == EventOutcome.Ok && marks.OkAfterFail:
                flags |= SessionFlags.SentAfterFail;
                break;
            case EventKind.Close:
                flags |= marks.Helo | (marks.Tls ? SessionFlags.Tls : SessionFlags.None);
                _sessions.Remove(e.SessionId);
                break;
        }

        return flags;
    }

    private static void See(ref Seen seen, long ms)
    {
        if (seen.Count == 0)
        {
            seen = new Seen(ms, ms, 1);
            return;
        }

        seen = new Seen(Math.Min(seen.First, ms), Math.Max(seen.Last, ms), seen.Count + 1);
    }

    private Activity Get<TKey>(Dictionary<TKey, Activity> map, TKey key) where TKey : notnull
    {
        ref var slot = ref CollectionsMarshal.GetValueRefOrAddDefault(map, key, out var exists);
        if (!exists)
        {
            if (_pooled == _pool.Count)
            {
                _pool.Add(new Activity());
            }

            slot = _pool[_pooled++];
            slot.Clear();
            _sortedCount = -1;
        }

        return slot!;
    }

    /// <summary><c>toUInt64OrZero(extract(detail, 'recipients=(\d+)'))</c>: the digits after the first <c>recipients=</c> followed by one.</summary>
    internal static ulong MessageRecipients(string detail)
    {
        var span = detail.AsSpan();
        while (true)
        {
            var at = span.IndexOf("recipients=", StringComparison.Ordinal);
            if (at < 0)
            {
                return 0;
            }

            span = span[(at + 11)..];
            var digits = 0;
            while (digits < span.Length && char.IsAsciiDigit(span[digits]))
            {
                digits++;
            }

            if (digits > 0)
            {
                return ulong.TryParse(span[..digits], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : 0;
            }
        }
    }

    private uint NetHash(UInt128 net)
    {
        ref var hash = ref CollectionsMarshal.GetValueRefOrAddDefault(_netHashes, net, out var exists);
        if (!exists)
        {
            hash = UniqState.OfString(Text(net));
        }

        return hash;
    }

    // Appends the uniq state of a set of hashes.
    private void State(NativeColumn column, in SmallSet<uint> set)
    {
        if (set.TryGetSmall(out var small))
        {
            UniqState.WriteSmall(column, small);
            return;
        }

        if (_hashScratch.Length < set.Count)
        {
            _hashScratch = new uint[Math.Max(set.Count, 2 * _hashScratch.Length)];
        }

        var n = 0;
        foreach (var h in set)
        {
            _hashScratch[n++] = h;
        }

        UniqState.Write(column, _hashScratch.AsSpan(0, n));
    }

    private string Text(UInt128 address)
    {
        ref var text = ref CollectionsMarshal.GetValueRefOrAddDefault(_ipText, address, out var exists);
        if (!exists)
        {
            text = IpText.Format(address);
        }

        return text!;
    }

    /// <summary>The <c>activity</c> block: the counters and the uniq states of every row.</summary>
    public void WriteActivity(IBufferWriter<byte> output)
    {
        _columnsUsed = 0;
        var rows = ActivityRows;
        var kind = Column();
        var entity = Column();
        var minute = Column();
        var counters = new NativeColumn[Counters.Length];
        for (var i = 0; i < counters.Length; i++)
        {
            counters[i] = Column();
        }

        var states = new NativeColumn[States.Length];
        for (var i = 0; i < states.Length; i++)
        {
            states[i] = Column();
        }

        void Row(byte entityKind, string name, uint at, Activity a)
        {
            kind.Byte(entityKind);
            entity.String(name);
            minute.UInt32(at);
            counters[0].UInt64(a.Events);
            counters[1].UInt64(a.AuthAttempts);
            counters[2].UInt64(a.AuthFailures);
            counters[3].UInt64(a.Rcpt);
            counters[4].UInt64(a.RcptRejected);
            counters[5].UInt64(a.RcptUnknown);
            counters[6].UInt64(a.Messages);
            counters[7].UInt64(a.MessageRcpts);
            counters[8].UInt64(a.MaxMessageRcpts);
            counters[9].UInt64(a.InvalidCommands);
            counters[10].UInt64(a.Throttled);
            counters[11].UInt64(a.NullSenders);
            counters[12].UInt64(a.Rsets);
            counters[13].UInt64(a.Closes);
            counters[14].UInt64(a.Quits);
            counters[15].UInt64(a.SessionMs);
            counters[16].UInt64(a.SessionCommands);
            counters[17].UInt64(a.HeloLiteral);
            counters[18].UInt64(a.HeloBare);
            counters[19].UInt64(a.Tls);
            counters[20].UInt64(a.AuthLogin);
            counters[21].UInt64(a.AuthOkAfterFail);
            counters[22].UInt64(a.SentAfterFail);
            counters[23].UInt64(a.Deliveries);
            counters[24].UInt64(a.DeliveryFailures);
            State(states[0], a.UsersTried);
            State(states[1], a.Ips);
            State(states[2], a.Nets);
            State(states[3], a.Recipients);
            State(states[4], a.Domains);
            State(states[5], a.Sessions);
            State(states[6], a.DataSessions);
            State(states[7], a.Passwords);
            State(states[8], a.FailedPasswords);
        }

        foreach (var r in SortedRows())
        {
            Row(r.Kind, r.Entity, r.Minute, r.Row);
        }

        NativeColumn.WriteBlockHeader(output, 3 + Counters.Length + States.Length, rows);
        NativeColumn.WriteColumn(output, "entity_kind", EntityKindType, kind.Written);
        NativeColumn.WriteColumn(output, "entity", "String", entity.Written);
        NativeColumn.WriteColumn(output, "minute", "DateTime('UTC')", minute.Written);
        for (var i = 0; i < Counters.Length; i++)
        {
            NativeColumn.WriteColumn(output, Counters[i].Name, Counters[i].Type, counters[i].Written);
        }

        for (var i = 0; i < States.Length; i++)
        {
            NativeColumn.WriteColumn(output, States[i].Name, States[i].Type, states[i].Written);
        }
    }

    /// <summary>
    /// The <c>activity_hourly</c> block: the batch's minute rows rolled up per entity and hour, as
    /// activity_hourly_mv (0014) did per inserted activity block; active_minutes is the number of
    /// distinct minutes of the batch, as its uniqExact(minute) was. A minute split across batches counts
    /// in each of them there, so readers count minute_mask's bits instead (0061): bit m is minute m of
    /// the hour, and merging rows ORs them. active_minutes stays for rows written before the mask.
    /// </summary>
    public void WriteHourly(IBufferWriter<byte> output)
    {
        _columnsUsed = 0;
        _hoursUsed = 0;
        var hours = _hourKeys;
        hours.Clear();

        // The minute rows come sorted by (kind, entity, minute): an entity's minutes of one hour are
        // adjacent, so each hour row is a run of them, and the hour rows come out in the table's order.
        Hour? cur = null;
        foreach (var r in SortedRows())
        {
            var key = (r.Kind, r.Entity, r.Minute - r.Minute % 3600);
            if (cur is null || hours[^1] != key)
            {
                if (_hoursUsed == _hourPool.Count)
                {
                    _hourPool.Add(new Hour());
                }

                cur = _hourPool[_hoursUsed++];
                cur.Clear();
                hours.Add(key);
            }

            var a = r.Row;
            var minute = r.Minute;

            // A minute with delivery attempts only is not one the client was active in.
            var active = a.Events > 0;
            cur.Events += a.Events;
            cur.ActiveMinutes += active ? 1UL : 0UL;
            cur.MinuteMask |= active ? 1UL << (int)(minute % 3600 / 60) : 0UL;
            cur.AuthAttempts += a.AuthAttempts;
            cur.AuthFailures += a.AuthFailures;
            cur.Rcpt += a.Rcpt;
            cur.RcptUnknown += a.RcptUnknown;
            cur.Messages += a.Messages;
            cur.Deliveries += a.Deliveries;
            cur.DeliveryFailures += a.DeliveryFailures;
            foreach (var v in a.UsersTried)
            {
                cur.UsersTried.Add(v);
            }

            foreach (var v in a.Ips)
            {
                cur.Ips.Add(v);
            }

            foreach (var v in a.Recipients)
            {
                cur.Recipients.Add(v);
            }
        }

        var rows = hours.Count;
        var kind = Column();
        var entity = Column();
        var hour = Column();
        var counters = new NativeColumn[9];
        for (var i = 0; i < counters.Length; i++)
        {
            counters[i] = Column();
        }

        var mask = Column();
        var users = Column();
        var ips = Column();
        var recipients = Column();
        for (var i = 0; i < rows; i++)
        {
            var (k, e, at) = hours[i];
            var h = _hourPool[i];
            kind.Byte(k);
            entity.String(e);
            hour.UInt32(at);
            counters[0].UInt64(h.Events);
            counters[1].UInt64(h.ActiveMinutes);
            counters[2].UInt64(h.AuthAttempts);
            counters[3].UInt64(h.AuthFailures);
            counters[4].UInt64(h.Rcpt);
            counters[5].UInt64(h.RcptUnknown);
            counters[6].UInt64(h.Messages);
            counters[7].UInt64(h.Deliveries);
            counters[8].UInt64(h.DeliveryFailures);
            mask.UInt64(h.MinuteMask);
            State(users, h.UsersTried);
            State(ips, h.Ips);
            State(recipients, h.Recipients);
        }

        string[] names = ["events", "active_minutes", "auth_attempts", "auth_failures", "rcpt", "rcpt_unknown", "messages", "deliveries", "delivery_failures"];
        NativeColumn.WriteBlockHeader(output, 3 + names.Length + 1 + 3, rows);
        NativeColumn.WriteColumn(output, "entity_kind", EntityKindType, kind.Written);
        NativeColumn.WriteColumn(output, "entity", "String", entity.Written);
        NativeColumn.WriteColumn(output, "hour", "DateTime('UTC')", hour.Written);
        for (var i = 0; i < names.Length; i++)
        {
            NativeColumn.WriteColumn(output, names[i], Sum, counters[i].Written);
        }

        NativeColumn.WriteColumn(output, "minute_mask", "SimpleAggregateFunction(groupBitOr, UInt64)", mask.Written);
        NativeColumn.WriteColumn(output, "users_tried", "AggregateFunction(uniq, String)", users.Written);
        NativeColumn.WriteColumn(output, "ips", "AggregateFunction(uniq, IPv6)", ips.Written);
        NativeColumn.WriteColumn(output, "recipients", "AggregateFunction(uniq, String)", recipients.Written);
    }

    /// <summary>
    /// The <c>active_entities</c> block: who was active in which minute (what active_entities_mv kept).
    /// A minute with delivery attempts only is not the client's activity and does not make it active.
    /// </summary>
    public void WriteActiveEntities(IBufferWriter<byte> output)
    {
        _columnsUsed = 0;
        var rows = 0;
        var minute = Column();
        var kind = Column();
        var entity = Column();
        foreach (var r in SortedRows())
        {
            if (r.Row.Events == 0)
            {
                continue;
            }

            minute.UInt32(r.Minute);
            kind.Byte(r.Kind);
            entity.String(r.Entity);
            rows++;
        }
        NativeColumn.WriteBlockHeader(output, 3, rows);
        NativeColumn.WriteColumn(output, "minute", "DateTime('UTC')", minute.Written);
        NativeColumn.WriteColumn(output, "entity_kind", EntityKindType, kind.Written);
        NativeColumn.WriteColumn(output, "entity", "String", entity.Written);
    }

    /// <summary>
    /// Every minute row with its entity as the tables name it, sorted as activity's ORDER BY (entity_kind,
    /// entity, minute). A block that comes sorted is written as it is; an unsorted one the engine sorts
    /// and permutes, column by column, before writing the part, which cost more than the rest of the
    /// insert (measured: activity 1,354 vs 804 ns per event, activity_hourly 626 vs 410, at 250,000
    /// events a batch). Ordinal order of the names is their UTF-8 byte order (ClickHouse's) for all but
    /// surrogate pairs against U+E000..U+FFFF: such a block is still correct, only sorted by the engine.
    /// </summary>
    private ReadOnlySpan<MinuteRow> SortedRows()
    {
        if (_sortedCount >= 0)
        {
            return _sorted.AsSpan(0, _sortedCount);
        }

        var count = ActivityRows;
        if (_sorted.Length < count)
        {
            _sorted = new MinuteRow[Math.Max(count, 2 * _sorted.Length)];
            _unsorted = new MinuteRow[_sorted.Length];
            _rowKeys = new RowKey[_sorted.Length];
        }

        var n = 0;
        foreach (var ((user, at), a) in _users)
        {
            _rowKeys[n] = new RowKey(Prefix8(user), at, n);
            _unsorted[n++] = new MinuteRow(1, user, at, a);
        }

        foreach (var ((ip, at), a) in _ips)
        {
            a.Name ??= IpEntity(ip);
            _rowKeys[n] = new RowKey(Prefix8(a.Name), at, n);
            _unsorted[n++] = new MinuteRow(2, a.Name, at, a);
        }

        foreach (var ((net, at), a) in _nets)
        {
            a.Name ??= NetEntity(net);
            _rowKeys[n] = new RowKey(Prefix8(a.Name), at, n);
            _unsorted[n++] = new MinuteRow(3, a.Name, at, a);
        }

        // Each kind's rows are already together and the kinds in order: sort within each. Small keys
        // are sorted (most comparisons end on the prefixes), then the rows gathered in their order.
        var keys = _rowKeys.AsSpan(0, n);
        var byEntity = new ByEntityAndMinute(_unsorted);
        keys[.._users.Count].Sort(byEntity);
        keys.Slice(_users.Count, _ips.Count).Sort(byEntity);
        keys[(_users.Count + _ips.Count)..].Sort(byEntity);
        for (var i = 0; i < n; i++)
        {
            _sorted[i] = _unsorted[keys[i].Index];
        }

        _sortedCount = n;
        return _sorted.AsSpan(0, n);
    }

    private readonly record struct MinuteRow(byte Kind, string Entity, uint Minute, Activity Row);

    private readonly record struct RowKey(ulong Prefix, uint Minute, int Index);

    private readonly struct ByEntityAndMinute(MinuteRow[] rows) : IComparer<RowKey>
    {
        public int Compare(RowKey x, RowKey y)
        {
            var c = x.Prefix.CompareTo(y.Prefix);
            if (c == 0)
            {
                var (xe, ye) = (rows[x.Index].Entity, rows[y.Index].Entity);
                c = ReferenceEquals(xe, ye) ? 0 : string.CompareOrdinal(xe, ye);
            }

            return c != 0 ? c : x.Minute.CompareTo(y.Minute);
        }
    }

    // Entity names, made once per distinct address of the batch (a row of each minute shares them).
    private readonly Dictionary<UInt128, string> _ipEntities = [];
    private readonly Dictionary<UInt128, string> _netEntities = [];

    private string IpEntity(UInt128 ip)
    {
        ref var name = ref CollectionsMarshal.GetValueRefOrAddDefault(_ipEntities, ip, out var exists);
        return exists ? name! : name = IpText.IsIPv4Mapped(ip) ? IpText.Dotted((uint)ip) : IpText.WithoutMappedPrefix(Text(ip));
    }

    private string NetEntity(UInt128 net)
    {
        ref var name = ref CollectionsMarshal.GetValueRefOrAddDefault(_netEntities, net, out var exists);
        return exists ? name! : name = IpText.WithoutMappedPrefix(Text(net)) + (IpText.IsIPv4Mapped(net) ? "/24" : "/64");
    }

    private sealed class Hour
    {
        public ulong Events, ActiveMinutes, AuthAttempts, AuthFailures, Rcpt, RcptUnknown, Messages, Deliveries, DeliveryFailures;

        // Bit m: the entity was active in minute m of the hour (0061).
        public ulong MinuteMask;
        public SmallSet<uint> UsersTried;
        public SmallSet<uint> Ips;
        public SmallSet<uint> Recipients;

        public void Clear()
        {
            Events = ActiveMinutes = AuthAttempts = AuthFailures = Rcpt = RcptUnknown = Messages = Deliveries = DeliveryFailures = MinuteMask = 0;
            UsersTried.Clear();
            Ips.Clear();
            Recipients.Clear();
        }
    }

    /// <summary>The <c>first_seen</c> block (its SimpleAggregateFunction columns take plain values).</summary>
    public void WriteFirstSeen(IBufferWriter<byte> output)
    {
        _columnsUsed = 0;
        var rows = FirstSeenRows;
        var user = Column();
        var kind = Column();
        var value = Column();
        var first = Column();
        var last = Column();

        foreach (var ((u, k, address), seen) in _seenAddresses)
        {
            user.String(u);
            kind.Byte(k);
            value.String(k == SeenIp ? IpEntity(address) : IpText.WithoutMappedPrefix(Text(address)));
            first.Int64(seen.First);
            last.Int64(seen.Last);
        }

        foreach (var ((u, k, v), seen) in _seenValues)
        {
            user.String(u);
            kind.Byte(k);
            value.String(v);
            first.Int64(seen.First);
            last.Int64(seen.Last);
        }

        NativeColumn.WriteBlockHeader(output, 5, rows);
        NativeColumn.WriteColumn(output, "user", "String", user.Written);
        NativeColumn.WriteColumn(output, "seen_kind", SeenKindType, kind.Written);
        NativeColumn.WriteColumn(output, "value", "String", value.Written);
        NativeColumn.WriteColumn(output, "first_seen", "DateTime64(3, 'UTC')", first.Written);
        NativeColumn.WriteColumn(output, "last_seen", "DateTime64(3, 'UTC')", last.Written);
    }

    private readonly record struct Seen(long First, long Last, int Count);

    /// <summary>
    /// A name's first 8 UTF-16 units as one byte each, the first in the high byte: ordered as the names'
    /// ordinal order wherever two prefixes differ. A unit past ASCII and all after it count as 0xFF (two
    /// names alike up to there compare equal here, and by their text), a name shorter than 8 is padded
    /// with 0 (a tie, then the text decides).
    /// </summary>
    private static ulong Prefix8(string name)
    {
        ulong prefix = 0;
        var wide = false;
        for (var i = 0; i < 8; i++)
        {
            var c = i < name.Length ? name[i] : '\0';
            wide |= c > 0x7f;
            prefix = (prefix << 8) | (wide ? 0xffUL : c);
        }

        return prefix;
    }

    /// <summary>One activity row in the making.</summary>
    private sealed class Activity
    {
        // The entity's name as the tables spell it (IP and network rows), made on first use.
        public string? Name;
        public ulong Events, AuthAttempts, AuthFailures, Rcpt, RcptRejected, RcptUnknown, Messages, MessageRcpts, MaxMessageRcpts, InvalidCommands, Throttled;
        public ulong NullSenders, Rsets, Closes, Quits, SessionMs, SessionCommands, HeloLiteral, HeloBare, Tls, AuthLogin, AuthOkAfterFail, SentAfterFail, Deliveries, DeliveryFailures;
        // Distinct values as their uniq hashes (what a uniq state holds).
        public SmallSet<uint> Passwords;
        public SmallSet<uint> FailedPasswords;
        public SmallSet<uint> UsersTried;
        public SmallSet<uint> Ips;
        public SmallSet<uint> Nets;
        public SmallSet<uint> Recipients;
        public SmallSet<uint> Domains;
        public SmallSet<uint> Sessions;
        public SmallSet<uint> DataSessions;

        public void Clear()
        {
            Name = null;
            Events = AuthAttempts = AuthFailures = Rcpt = RcptRejected = RcptUnknown = Messages = MessageRcpts = MaxMessageRcpts = InvalidCommands = Throttled = 0;
            NullSenders = Rsets = Closes = Quits = SessionMs = SessionCommands = HeloLiteral = HeloBare = Tls = AuthLogin = AuthOkAfterFail = SentAfterFail = Deliveries = DeliveryFailures = 0;
            Passwords.Clear();
            FailedPasswords.Clear();
            UsersTried.Clear();
            Ips.Clear();
            Nets.Clear();
            Recipients.Clear();
            Domains.Clear();
            Sessions.Clear();
            DataSessions.Clear();
        }

        public void Delivered(bool failed)
        {
            Deliveries++;
            DeliveryFailures += failed ? 1UL : 0UL;
        }

        // The definitions of activity_mv (0010_activity.sql), event by event, and those of 0040.
        public void Add(SmtpEvent e, string user, string domain, ulong messageRecipients, SessionFlags marks, in Hashes hashes)
        {
            Events++;
            Ips.Add(hashes.Ip);
            Nets.Add(hashes.Net);
            Sessions.Add(hashes.Session);
            HeloLiteral += (marks & SessionFlags.HeloLiteral) != 0 ? 1UL : 0UL;
            HeloBare += (marks & SessionFlags.HeloBare) != 0 ? 1UL : 0UL;
            AuthOkAfterFail += (marks & SessionFlags.OkAfterFail) != 0 ? 1UL : 0UL;
            SentAfterFail += (marks & SessionFlags.SentAfterFail) != 0 ? 1UL : 0UL;
            Tls += (marks & SessionFlags.Tls) != 0 ? 1UL : 0UL;
            switch (e.Kind)
            {
                case EventKind.Auth:
                    AuthAttempts++;
                    if (e.Outcome != EventOutcome.Ok)
                    {
                        AuthFailures++;
                    }

                    if (string.Equals(e.Mechanism, "LOGIN", StringComparison.OrdinalIgnoreCase))
                    {
                        AuthLogin++;
                    }

                    if (e.SecretTag != 0)
                    {
                        Passwords.Add(hashes.Password);
                        if (e.ReplyCode == 535)
                        {
                            FailedPasswords.Add(hashes.Password);
                        }
                    }

                    if (user.Length != 0)
                    {
                        UsersTried.Add(hashes.User);
                    }

                    break;
                case EventKind.Rcpt:
                    Rcpt++;
                    if (e.Outcome != EventOutcome.Ok)
                    {
                        RcptRejected++;
                    }

                    if (e.Status == "5.1.1")
                    {
                        RcptUnknown++;
                    }

                    Recipients.Add(hashes.Recipient);
                    if (domain.Length != 0)
                    {
                        Domains.Add(hashes.Domain);
                    }

                    break;
                case EventKind.Data when e.Outcome == EventOutcome.Ok:
                    Messages++;
                    MessageRcpts += messageRecipients;
                    MaxMessageRcpts = Math.Max(MaxMessageRcpts, messageRecipients);
                    DataSessions.Add(hashes.Session);
                    break;
                case EventKind.Invalid:
                    InvalidCommands++;
                    break;
                case EventKind.Throttle:
                    Throttled++;
                    break;
                case EventKind.Mail when e.Sender.Length == 0:
                    NullSenders++;
                    break;
                case EventKind.Rset:
                    Rsets++;
                    break;
                case EventKind.Close:
                    Closes++;
                    Quits += e.Detail == "quit" ? 1UL : 0UL;
                    SessionMs += e.DurationMs;
                    SessionCommands += e.Size;
                    break;
            }
        }
    }

    /// <summary>An event's values as uniq hashes (0 where the event has none to count).</summary>
    private readonly struct Hashes
    {
        public uint Ip { get; init; }
        public uint Net { get; init; }
        public uint Session { get; init; }
        public uint User { get; init; }
        public uint Recipient { get; init; }
        public uint Domain { get; init; }
        public uint Password { get; init; }
    }

    /// <summary>What one session has shown so far, as far as the batch saw it.</summary>
    private struct SessionMarks
    {
        public bool Greeted;
        public string? HeloName;
        public string? TlsProtocol;
        public string? TlsCipher;
        public SessionFlags Helo;
        public bool Tls;
        public bool AuthFailed;
        public bool OkAfterFail;
    }
}

/// <summary>Marks an event carries from its session: on the close, its first EHLO's kind and STARTTLS; an AUTH success after a failure; a message sent after one.</summary>
[Flags]
internal enum SessionFlags : byte
{
    None = 0,
    HeloLiteral = 1,
    HeloBare = 2,
    OkAfterFail = 4,
    SentAfterFail = 8,
    Tls = 16,
}

/// <summary>
/// A set that keeps its first few values inside itself, then a short array, then a hash set (most
/// per-minute sets hold one to a few values). Kept inline, a row's sets sit in the row's own memory:
/// the sink walks tens of thousands of rows a batch, and a separate array per set was a cache miss
/// per set, on every event added and again on every row written.
/// </summary>
internal struct SmallSet<T> where T : IEquatable<T>
{
    private const int InlineLimit = 4;
    private const int ArrayLimit = 16;
    private Inline _inline;
    private T[]? _items;
    private int _count;
    private HashSet<T>? _set;

    public readonly int Count => _set?.Count ?? _count;

    public void Add(T value)
    {
        if (_set is not null)
        {
            _set.Add(value);
            return;
        }

        var values = _count <= InlineLimit ? ((Span<T>)_inline)[.._count] : _items.AsSpan(0, _count);
        if (values.Contains(value))
        {
            return;
        }

        if (_count < InlineLimit)
        {
            _inline[_count++] = value;
            return;
        }

        if (_count == ArrayLimit)
        {
            _set = new HashSet<T>(_items.AsSpan(0, _count).ToArray()) { value };
            return;
        }

        if (_count == InlineLimit)
        {
            if (_items is null || _items.Length < 2 * InlineLimit)
            {
                _items = new T[2 * InlineLimit];
            }

            ((ReadOnlySpan<T>)_inline).CopyTo(_items);
        }
        else if (_count == _items!.Length)
        {
            Array.Resize(ref _items, Math.Min(ArrayLimit, _count * 2));
        }

        _items[_count++] = value;
    }

    public void Clear()
    {
        _count = 0;
        _set = null;
    }

    public readonly Enumerator GetEnumerator() => new(_inline, _items, _count, _set);

    /// <summary>The values, when the set is still short (inline or an array).</summary>
    [UnscopedRef]
    public readonly bool TryGetSmall(out ReadOnlySpan<T> values)
    {
        values = _set is not null ? default : _count <= InlineLimit ? ((ReadOnlySpan<T>)_inline)[.._count] : _items.AsSpan(0, _count);
        return _set is null;
    }

    [InlineArray(InlineLimit)]
    internal struct Inline
    {
        private T _first;
    }

    public struct Enumerator(Inline inline, T[]? items, int count, HashSet<T>? set)
    {
        private HashSet<T>.Enumerator _setEnumerator = set?.GetEnumerator() ?? default;
        private Inline _inline = inline;
        private int _index = -1;

        public readonly T Current => set is not null ? _setEnumerator.Current : count <= InlineLimit ? _inline[_index] : items![_index];

        public bool MoveNext() => set is not null ? _setEnumerator.MoveNext() : ++_index < count;
    }
}
