using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace Analytics.Store.Schema;

/// <summary>One versioned schema step, from an embedded <c>NNNN_name.sql</c> file.</summary>
public sealed record Migration(int Version, string Name, string Sql)
{
    public string Checksum { get; } = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Sql)))[..16];

    /// <summary>
    /// The statements of the file, split on lines ending in ';', with the template filled in; in their
    /// cluster form (<see cref="ClusterDdl"/>) when <see cref="SchemaSettings.Cluster"/> is set.
    /// </summary>
    public IReadOnlyList<string> Statements(SchemaSettings settings)
    {
        var plain = PlainStatements(settings);
        if (settings.Cluster is not { } cluster)
        {
            return plain;
        }

        var tables = Migrator.Tables(settings);
        return [.. plain.SelectMany(s => ClusterDdl.Transform(s, cluster, tables, settings.SingleNode))];
    }

    private List<string> PlainStatements(SchemaSettings settings)
    {
        var text = Sql.Replace("{{retention_days}}", settings.RetentionDays.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
        var statements = new List<string>();
        var current = new StringBuilder();
        foreach (var line in text.Split('\n'))
        {
            var trimmed = line.TrimEnd();
            if (trimmed.TrimStart().StartsWith("--", StringComparison.Ordinal))
            {
                continue;
            }

            current.AppendLine(trimmed);
            if (trimmed.EndsWith(';'))
            {
                statements.Add(current.ToString().Trim().TrimEnd(';'));
                current.Clear();
            }
        }

        if (current.ToString().Trim() is { Length: > 0 } rest)
        {
            statements.Add(rest);
        }

        return statements;
    }
}

/// <summary>Settings that shape the schema. Validated by the caller's options.</summary>
public sealed record SchemaSettings
{
    /// <summary>Days raw events are kept (ClickHouse TTL). Default 90.</summary>
    public int RetentionDays { get; init; } = 90;

    /// <summary>
    /// A ClickHouse cluster (a name from its <c>remote_servers</c>): the schema is created ON CLUSTER as
    /// replicated <c>*_local</c> tables behind Distributed tables of the plain names. Null (default): one server.
    /// </summary>
    public string? Cluster { get; init; }

    /// <summary>With <see cref="Cluster"/>: the cluster shape without Keeper or a cluster definition (tests on the embedded engine).</summary>
    public bool SingleNode { get; init; }
}

/// <summary>
/// Applies the embedded migrations in version order, once each, and records them in
/// <c>schema_migrations</c>. Every statement is idempotent (IF NOT EXISTS), so a crash between a
/// statement and its record is repaired by the next start.
/// </summary>
public sealed partial class Migrator
{
    private const string HistoryTable = """
        CREATE TABLE IF NOT EXISTS schema_migrations
        (
            version    UInt32,
            name       String,
            checksum   String,
            applied_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree
        ORDER BY version
        """;

    private readonly IClickHouseStore _store;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;

    public Migrator(IClickHouseStore store, ILogger logger, TimeProvider? time = null)
    {
        _store = store;
        _logger = logger;
        _time = time ?? TimeProvider.System;
    }

    public static IReadOnlyList<Migration> Embedded { get; } = LoadEmbedded();

    /// <summary>Applies what is missing; returns the versions applied by this call.</summary>
    public async Task<IReadOnlyList<int>> ApplyAsync(SchemaSettings settings, CancellationToken cancellationToken = default)
    {
        foreach (var statement in HistoryStatements(settings))
        {
            await _store.ExecuteAsync(statement, null, cancellationToken);
        }

        var applied = (await _store.QueryListAsync<AppliedMigration>("SELECT version FROM schema_migrations FINAL", null, cancellationToken))
            .Select(m => m.Version).ToHashSet();
        var done = new List<int>();
        foreach (var migration in Embedded)
        {
            if (applied.Contains(migration.Version))
            {
                continue;
            }

            foreach (var statement in migration.Statements(settings))
            {
                await _store.ExecuteAsync(statement, null, cancellationToken);
            }

            await _store.ExecuteAsync(
                "INSERT INTO " + History(settings) + " (version, name, checksum, applied_at) VALUES ({v:UInt32}, {n:String}, {c:String}, {t:DateTime64(3)})",
                QueryParameters.Of(("v", migration.Version), ("n", migration.Name), ("c", migration.Checksum), ("t", _time.GetUtcNow())),
                cancellationToken);
            LogApplied(_logger, migration.Version, migration.Name);
            done.Add(migration.Version);
        }

        await ApplyRetentionAsync(settings, cancellationToken);
        return done;
    }

    /// <summary>Every statement of every migration, in order, as <see cref="ApplyAsync"/> would run them (for review before a cluster upgrade).</summary>
    public static IReadOnlyList<string> Script(SchemaSettings settings) =>
        [.. HistoryStatements(settings), .. Embedded.SelectMany(m => m.Statements(settings))];

    /// <summary>Names of the tables the migrations create (the cluster form renames references to them).</summary>
    internal static HashSet<string> Tables(SchemaSettings settings)
    {
        var plain = settings with { Cluster = null };
        var tables = new HashSet<string>(StringComparer.Ordinal) { "schema_migrations" };
        foreach (var statement in Embedded.SelectMany(m => m.Statements(plain)))
        {
            if (TableName().Match(statement) is { Success: true } match)
            {
                tables.Add(match.Groups[1].Value);
            }
        }

        return tables;
    }

    private static IReadOnlyList<string> HistoryStatements(SchemaSettings settings) =>
        settings.Cluster is { } cluster ? ClusterDdl.Transform(HistoryTable, cluster, Tables(settings), settings.SingleNode) : [HistoryTable];

    // On a cluster the record goes straight into the replicated table: an insert through a Distributed
    // table is forwarded asynchronously, and the next start must see it.
    private static string History(SchemaSettings settings) => settings.Cluster is null ? "schema_migrations" : "schema_migrations" + ClusterDdl.LocalSuffix;

    // Retention is configuration, not schema: when it changes, the TTL follows without a migration.
    private async Task ApplyRetentionAsync(SchemaSettings settings, CancellationToken cancellationToken)
    {
        var table = settings.Cluster is null ? "events" : "events" + ClusterDdl.LocalSuffix;
        var engine = await _store.QueryFirstOrDefaultAsync<TableEngine>(
            "SELECT engine, engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}", QueryParameters.Of(("t", table)), cancellationToken);
        if (engine is null || engine.Engine is "Distributed" or "Merge")
        {
            // A node of a cluster started without the cluster setting: the TTL lives on events_local
            // and is changed by `schema apply --cluster`, not here.
            return;
        }

        // ClickHouse renders the TTL back as toIntervalDay(N).
        var current = engine.EngineFull;
        if (current.Contains($"toIntervalDay({settings.RetentionDays})", StringComparison.Ordinal))
        {
            return;
        }

        var onCluster = settings.Cluster is { } cluster && !settings.SingleNode ? $" ON CLUSTER `{cluster}`" : "";
        await _store.ExecuteAsync(
            $"ALTER TABLE {table}{onCluster} MODIFY TTL toDateTime(ts) + INTERVAL {settings.RetentionDays} DAY SETTINGS materialize_ttl_after_modify = 0", null, cancellationToken);
        LogRetention(_logger, settings.RetentionDays);
    }

    private static List<Migration> LoadEmbedded()
    {
        var assembly = typeof(Migrator).Assembly;
        var list = new List<Migration>();
        foreach (var resource in assembly.GetManifestResourceNames())
        {
            var match = ResourceName().Match(resource);
            if (!match.Success)
            {
                continue;
            }

            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var reader = new StreamReader(stream);
            list.Add(new Migration(int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), match.Groups[2].Value, reader.ReadToEnd()));
        }

        list.Sort((a, b) => a.Version.CompareTo(b.Version));
        return list;
    }

    [GeneratedRegex(@"^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)", RegexOptions.IgnoreCase)]
    private static partial Regex TableName();

    [GeneratedRegex(@"^Analytics\.Store\.Schema\.(\d{4})_([a-z0-9_]+)\.sql$")]
    private static partial Regex ResourceName();

    [LoggerMessage(Level = LogLevel.Information, Message = "Applied schema migration {Version} ({Name})")]
    private static partial void LogApplied(ILogger logger, int version, string name);

    [LoggerMessage(Level = LogLevel.Information, Message = "Event retention set to {Days} days")]
    private static partial void LogRetention(ILogger logger, int days);

    private sealed record AppliedMigration(int Version);

    private sealed record TableEngine(string Engine, string EngineFull);
}
