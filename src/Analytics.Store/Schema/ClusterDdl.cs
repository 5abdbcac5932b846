using System.Text.RegularExpressions;

namespace Analytics.Store.Schema;

/// <summary>
/// Turns the single-node schema into its cluster form, so there is one schema to maintain. For a
/// cluster named C, each <c>CREATE TABLE t … ENGINE = XMergeTree(args)</c> becomes
/// <list type="bullet">
/// <item><c>t_local ON CLUSTER C</c> with <c>ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/t_local', '{replica}', args)</c>: the data, replicated within a shard;</item>
/// <item><c>t ON CLUSTER C AS t_local ENGINE = Distributed(C, currentDatabase(), t_local, cityHash64(sort key))</c>: what every query and insert names, so the code is the same on one machine and on a cluster.</item>
/// </list>
/// Materialized views are created on every node over the local tables (<c>FROM events_local</c>,
/// <c>TO activity_local</c>): each shard aggregates the events it holds, and reads through the
/// Distributed tables merge the partial aggregates. Sharding by the sort key keeps every version of
/// a ReplacingMergeTree row on one shard, which FINAL needs.
/// </summary>
internal static partial class ClusterDdl
{
    public const string LocalSuffix = "_local";

    /// <summary>
    /// The cluster form of one statement. With <paramref name="singleNode"/> the same tables are made
    /// without Keeper or a cluster definition (what an embedded engine can run): no ON CLUSTER, plain
    /// MergeTree engines, and a Merge table in place of each Distributed one — the shape of the
    /// cluster schema, checked on one machine.
    /// </summary>
    public static IReadOnlyList<string> Transform(string statement, string cluster, ISet<string> tables, bool singleNode = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(cluster);
        if (!ClusterName().IsMatch(cluster))
        {
            throw new ArgumentException($"'{cluster}' is not a valid cluster name (letters, digits, '_', '-', '.').", nameof(cluster));
        }

        var onCluster = singleNode ? "" : $" ON CLUSTER `{cluster}`";
        var sql = statement.Trim();

        var table = CreateTable().Match(sql);
        if (table.Success)
        {
            var name = table.Groups["name"].Value;
            var local = name + LocalSuffix;
            tables.Add(name);
            var body = table.Groups["body"].Value;
            if (NullEngine().IsMatch(body))
            {
                // A table that keeps nothing and only feeds views: one per node, written through a
                // Distributed front like every other table, its views writing the node's local tables.
                var nullFront = singleNode
                    ? $"CREATE TABLE IF NOT EXISTS {name} AS {local} ENGINE = Merge(currentDatabase(), '^{local}$')"
                    : $"CREATE TABLE IF NOT EXISTS {name}{onCluster} AS {local} ENGINE = Distributed(`{cluster}`, currentDatabase(), {local}, rand())";
                return [$"CREATE TABLE IF NOT EXISTS {local}{onCluster}{body}", nullFront];
            }

            var engine = EngineClause().Match(body);
            if (!engine.Success)
            {
                throw new NotSupportedException($"CREATE TABLE {name}: no MergeTree-family ENGINE clause to replicate.");
            }

            var family = engine.Groups["family"].Value;
            var args = engine.Groups["args"].Success ? engine.Groups["args"].Value.Trim() : "";
            var replicated = singleNode
                ? $"ENGINE = {family}MergeTree{(args.Length > 0 ? "(" + args + ")" : "")}"
                : $"ENGINE = Replicated{family}MergeTree('/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}'{(args.Length > 0 ? ", " + args : "")})";
            var localBody = body[..engine.Index] + replicated + body[(engine.Index + engine.Length)..];
            var key = ShardingKey(body);
            var front = singleNode
                ? $"CREATE TABLE IF NOT EXISTS {name} AS {local} ENGINE = Merge(currentDatabase(), '^{local}$')"
                : $"CREATE TABLE IF NOT EXISTS {name}{onCluster} AS {local} ENGINE = Distributed(`{cluster}`, currentDatabase(), {local}, {key})";
            return [$"CREATE TABLE IF NOT EXISTS {local}{onCluster}{localBody}", front];
        }

        var view = CreateView().Match(sql);
        if (view.Success)
        {
            var select = RenameSources().Replace(view.Groups["select"].Value,
                m => tables.Contains(m.Groups["t"].Value) ? m.Groups["kw"].Value + m.Groups["t"].Value + LocalSuffix : m.Value);
            return [$"CREATE MATERIALIZED VIEW IF NOT EXISTS {view.Groups["name"].Value}{onCluster} TO {view.Groups["to"].Value}{LocalSuffix} AS{select}"];
        }

        var drop = DropView().Match(sql);
        if (drop.Success)
        {
            return [$"DROP VIEW IF EXISTS {drop.Groups["name"].Value}{onCluster}"];
        }

        var alter = AlterTable().Match(sql);
        if (alter.Success && tables.Contains(alter.Groups["name"].Value))
        {
            // Storage changes (TTL, columns) go to the data; a column change must reach the Distributed
            // table too, so both are altered, data first.
            var name = alter.Groups["name"].Value;
            var rest = alter.Groups["rest"].Value;
            var statements = new List<string> { $"ALTER TABLE {name}{LocalSuffix}{onCluster}{rest}" };
            if (ColumnChange().IsMatch(rest))
            {
                statements.Add($"ALTER TABLE {name}{onCluster}{rest}");
            }

            return statements;
        }

        if (sql.TrimStart().StartsWith("INSERT INTO", StringComparison.OrdinalIgnoreCase))
        {
            // Backfills of a new aggregate from data already recorded: a single-node upgrade concern.
            // On a cluster every node would run it against the Distributed tables and multiply the
            // rows, so the cluster form skips it (backfill by hand once, from one node, if needed).
            return [];
        }

        throw new NotSupportedException($"The cluster form of this statement is not defined (only CREATE TABLE, CREATE MATERIALIZED VIEW … TO, DROP VIEW and ALTER TABLE are): {Abbreviate(sql)}");
    }

    /// <summary>cityHash64 of the sort key (minus time columns, which would scatter an entity), or rand() when there is none.</summary>
    private static string ShardingKey(string body)
    {
        var order = OrderBy().Match(body);
        if (!order.Success)
        {
            return "rand()";
        }

        var columns = order.Groups["key"].Value.Trim().TrimStart('(').TrimEnd(')')
            .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Where(c => c is not ("ts" or "at" or "minute" or "scored_at" or "set_at" or "created_at" or "tuple()"))
            .ToList();
        return columns.Count == 0 ? "rand()" : $"cityHash64({string.Join(", ", columns)})";
    }

    private static string Abbreviate(string sql) => sql.Length <= 120 ? sql : sql[..120] + "…";

    [GeneratedRegex(@"^[A-Za-z0-9_.\-]+$")]
    private static partial Regex ClusterName();

    [GeneratedRegex(@"^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(?<name>\w+)(?<body>\s*\(.*)$", RegexOptions.Singleline | RegexOptions.IgnoreCase)]
    private static partial Regex CreateTable();

    // The engine clause after the column list: ENGINE = XMergeTree or ENGINE = XMergeTree(args) (args without nested parentheses).
    [GeneratedRegex(@"\bENGINE\s*=\s*(?<family>\w*)MergeTree(\s*\((?<args>[^()]*)\))?", RegexOptions.IgnoreCase)]
    private static partial Regex EngineClause();

    [GeneratedRegex(@"\bENGINE\s*=\s*Null\s*$", RegexOptions.IgnoreCase)]
    private static partial Regex NullEngine();

    [GeneratedRegex(@"^DROP\s+VIEW\s+IF\s+EXISTS\s+(?<name>\w+)$", RegexOptions.IgnoreCase)]
    private static partial Regex DropView();

    [GeneratedRegex(@"\bORDER\s+BY\s+(?<key>\([^)]*\)|\w+)", RegexOptions.IgnoreCase)]
    private static partial Regex OrderBy();

    [GeneratedRegex(@"^CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+(?<name>\w+)\s+TO\s+(?<to>\w+)\s+AS(?<select>\s.*)$", RegexOptions.Singleline | RegexOptions.IgnoreCase)]
    private static partial Regex CreateView();

    [GeneratedRegex(@"(?<kw>\b(?:FROM|JOIN)\s+)(?<t>\w+)\b", RegexOptions.IgnoreCase)]
    private static partial Regex RenameSources();

    [GeneratedRegex(@"^ALTER\s+TABLE\s+(?<name>\w+)(?<rest>\s.*)$", RegexOptions.Singleline | RegexOptions.IgnoreCase)]
    private static partial Regex AlterTable();

    [GeneratedRegex(@"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", RegexOptions.IgnoreCase)]
    private static partial Regex ColumnChange();
}
