using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Analytics.Store;

namespace Analytics.Limits;

/// <summary>
/// Limits in the store: <c>limits</c> (the newest version per entity wins, read with FINAL; how nodes
/// converge) and <c>limit_changes</c> (every change with its reason and node). Writes go in bounded
/// batches, so one pass of a distributed attack (thousands of changes) is several modest INSERTs
/// rather than one statement that grows while the store is failing.
/// </summary>
public sealed class LimitRecords
{
    /// <summary>Most limits per INSERT.</summary>
    public const int BatchSize = 200;

    private const string Columns = "entity_kind, entity, level, source, class, messages_per_minute, recipients_per_hour, recipients_per_message, auth_locked, tarpit_ms, blocked, reason, set_by, set_at, expires_at, version";

    private readonly IClickHouseStore _store;
    private readonly string _node;

    public LimitRecords(IClickHouseStore store, string node)
    {
        _store = store;
        _node = node;
    }

    /// <summary>The limits recorded with a version above <paramref name="since"/>, oldest first.</summary>
    public async IAsyncEnumerable<EntityLimit> ReadSinceAsync(ulong since, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var row in _store.QueryAsync<Row>($"SELECT {Columns} FROM limits FINAL WHERE version > {{v:UInt64}} ORDER BY version",
                           QueryParameters.Of(("v", since)), cancellationToken))
        {
            yield return row.ToLimit();
        }
    }

    /// <summary>The recorded changes for an entity, newest first.</summary>
    public async Task<IReadOnlyList<EntityLimit>> HistoryAsync(EntityRef entity, int max, CancellationToken cancellationToken = default)
    {
        var rows = await _store.QueryListAsync<Row>(
            $"SELECT {Columns} FROM limit_changes WHERE entity_kind = {{k:String}} AND entity = {{e:String}} ORDER BY version DESC LIMIT {{n:UInt32}}",
            QueryParameters.Of(("k", entity.Kind.ToText()), ("e", entity.Name), ("n", max)), cancellationToken);
        return rows.ConvertAll(r => r.ToLimit());
    }

    /// <summary>Records limits in both tables, <see cref="BatchSize"/> at a time.</summary>
    public async Task WriteAsync(IReadOnlyList<EntityLimit> limits, CancellationToken cancellationToken = default)
    {
        for (var offset = 0; offset < limits.Count; offset += BatchSize)
        {
            var batch = limits.Skip(offset).Take(BatchSize).ToList();
            foreach (var table in new[] { "limits", "limit_changes" })
            {
                var withNode = table == "limit_changes";
                var sql = new StringBuilder($"INSERT INTO {table} ({Columns}{(withNode ? ", node" : "")}) VALUES ");
                var parameters = new QueryParameters();
                for (var i = 0; i < batch.Count; i++)
                {
                    sql.Append(i == 0 ? "" : ", ").Append(Placeholders(i, withNode));
                    Bind(parameters, i, batch[i]);
                }

                parameters["node"] = _node;
                await _store.ExecuteAsync(sql.ToString(), parameters, cancellationToken);
            }
        }
    }

    private static string Placeholders(int i, bool node) => string.Create(CultureInfo.InvariantCulture,
        $"({{k{i}:String}}, {{e{i}:String}}, {{l{i}:String}}, {{s{i}:String}}, {{c{i}:String}}, {{m{i}:Nullable(Float64)}}, {{r{i}:Nullable(Float64)}}, {{p{i}:Nullable(Int32)}}, {{a{i}:Bool}}, {{t{i}:UInt32}}, {{b{i}:Bool}}, {{why{i}:String}}, {{by{i}:String}}, {{at{i}:DateTime64(3)}}, {{x{i}:Nullable(DateTime64(3))}}, {{v{i}:UInt64}}{(node ? ", {node:String}" : "")})");

    private static void Bind(QueryParameters p, int i, EntityLimit l)
    {
        string N(string name) => name + i.ToString(CultureInfo.InvariantCulture);
        p[N("k")] = l.Entity.Kind.ToText();
        p[N("e")] = l.Entity.Name;
        p[N("l")] = l.Level.ToString().ToLowerInvariant();
        p[N("s")] = l.Source.ToString().ToLowerInvariant();
        p[N("c")] = l.Class.ToText();
        p[N("m")] = l.MessagesPerMinute;
        p[N("r")] = l.RecipientsPerHour;
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

    /// <summary>A row of <c>limits</c> or <c>limit_changes</c>, by column name.</summary>
    private sealed record Row(
        EntityKind EntityKind, string Entity, LimitLevel Level, LimitSource Source, ThreatClass Class,
        double? MessagesPerMinute, double? RecipientsPerHour, int? RecipientsPerMessage, bool AuthLocked, TimeSpan TarpitMs,
        bool Blocked, string Reason, string SetBy, DateTime SetAt, DateTime? ExpiresAt, ulong Version)
    {
        public EntityLimit ToLimit() => new()
        {
            Entity = new EntityRef(EntityKind, Entity),
            Level = Level,
            Source = Source,
            Class = Class,
            MessagesPerMinute = MessagesPerMinute,
            RecipientsPerHour = RecipientsPerHour,
            RecipientsPerMessage = RecipientsPerMessage,
            AuthLocked = AuthLocked,
            Tarpit = TarpitMs,
            Blocked = Blocked,
            Reason = Reason,
            SetBy = SetBy,
            SetAt = SetAt,
            ExpiresAt = ExpiresAt,
            Version = Version,
        };
    }
}
