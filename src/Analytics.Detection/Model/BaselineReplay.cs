using Analytics.Store;

namespace Analytics.Detection.Model;

/// <summary>An action a detector took on an entity at a time: a ban, a throttle, a flag.</summary>
/// <summary>An action a detector took on an entity; <see cref="Class"/>: what the model said it is (null for a rule, which acts on everything alike).</summary>
public sealed record DetectorAction(DateTime At, EntityRef Entity, string Detector, ThreatClass? Class = null);

/// <summary>
/// What operators run today, replayed over the recorded event stream one event at a time, each
/// detector acting on the entity it acts on (the client IP) at the moment it would act:
/// <list type="bullet">
/// <item>fail2ban's <c>postfix-sasl</c> jail: an IP with <see cref="MaxRetry"/> SASL authentication
/// failures (535) within <see cref="FindTime"/> is banned for <see cref="BanTime"/>;</item>
/// <item>fail2ban's <c>postfix</c> jail (normal mode, which matches unknown users, relay denied and
/// other RCPT rejections): the same counts over rejected RCPTs;</item>
/// <item>Postfix's per-session error limits: a session's <see cref="SoftErrorLimit"/>th error (a
/// 4xx/5xx reply to a client command) slows every further reply (smtpd_error_sleep_time), its
/// <see cref="HardErrorLimit"/>th closes the session; the first is the action on the client.</item>
/// </list>
/// Jail defaults are fail2ban's jail.conf (maxretry 5, findtime 10m, bantime 10m); the error limits
/// Postfix's main.cf defaults. While an IP is banned its failures are not counted (it could not have
/// connected); after the ban the count starts afresh. Refusals that only this project's fast path
/// makes (454, 421, 451 by policy) are not errors Postfix would have logged and are not counted.
/// </summary>
public static class BaselineReplay
{
    public const string Fail2BanSasl = "fail2ban-postfix-sasl";
    public const string Fail2BanPostfix = "fail2ban-postfix";
    public const string PostfixErrorLimits = "postfix-error-limits";
    public const string Combined = "baseline";

    public const int MaxRetry = 5;
    public static readonly TimeSpan FindTime = TimeSpan.FromMinutes(10);
    public static readonly TimeSpan BanTime = TimeSpan.FromMinutes(10);
    public const int SoftErrorLimit = 10;
    public const int HardErrorLimit = 20;

    private const string Sql = """
        SELECT ts, session_id, replaceOne(IPv6NumToString(client_ip), '::ffff:', '') AS ip, toString(kind) AS kind
        FROM events
        WHERE ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
          AND ((kind = 'auth' AND reply_code = 535)
            OR (kind = 'rcpt' AND reply_code >= 500)
            OR (kind = 'mail' AND reply_code >= 500)
            OR kind = 'invalid')
        ORDER BY ts, session_id
        """;

    /// <summary>The actions of each baseline detector over [from, to), in time order.</summary>
    public static async Task<List<DetectorAction>> RunAsync(IClickHouseStore store, DateTime from, DateTime to, CancellationToken cancellationToken = default)
    {
        var result = await store.QueryAsync(Sql, QueryParameters.Of(("from", from), ("to", to)), cancellationToken);
        return Run(result.Rows.Select(r => ((DateTime)r[0]!, (ulong)r[1]!, (string)r[2]!, (string)r[3]!)));
    }

    /// <summary>The replay itself, over error events in time order: (time, session, client IP, kind).</summary>
    public static List<DetectorAction> Run(IEnumerable<(DateTime At, ulong Session, string Ip, string Kind)> events)
    {
        var actions = new List<DetectorAction>();
        var sasl = new Jail(Fail2BanSasl);
        var postfix = new Jail(Fail2BanPostfix);
        var sessionErrors = new Dictionary<ulong, int>();
        foreach (var (at, session, ip, kind) in events)
        {
            var entity = new EntityRef(EntityKind.Ip, ip);
            if (kind == "auth" && sasl.Fail(entity, at) is { } ban)
            {
                actions.Add(ban);
            }

            if (kind == "rcpt" && postfix.Fail(entity, at) is { } rcptBan)
            {
                actions.Add(rcptBan);
            }

            var errors = sessionErrors[session] = sessionErrors.GetValueOrDefault(session) + 1;
            if (errors == SoftErrorLimit)
            {
                actions.Add(new DetectorAction(at, entity, PostfixErrorLimits));
            }
        }

        return actions;
    }

    /// <summary>One fail2ban jail: failures per IP within findtime, bans of bantime.</summary>
    private sealed class Jail(string name)
    {
        private readonly Dictionary<EntityRef, Queue<DateTime>> _failures = [];
        private readonly Dictionary<EntityRef, DateTime> _bannedUntil = [];

        public DetectorAction? Fail(EntityRef ip, DateTime at)
        {
            if (_bannedUntil.TryGetValue(ip, out var until) && at < until)
            {
                return null;
            }

            if (!_failures.TryGetValue(ip, out var queue))
            {
                _failures[ip] = queue = new Queue<DateTime>();
            }

            while (queue.Count > 0 && at - queue.Peek() > FindTime)
            {
                queue.Dequeue();
            }

            queue.Enqueue(at);
            if (queue.Count < MaxRetry)
            {
                return null;
            }

            queue.Clear();
            _bannedUntil[ip] = at + BanTime;
            return new DetectorAction(at, ip, name);
        }
    }
}
