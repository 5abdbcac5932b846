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

    /// <summary>The statements of the file, split on lines ending in ';', with the template filled in.</summary>
    public IReadOnlyList<string> Statements(SchemaSettings settings)
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
        await _store.ExecuteAsync(HistoryTable, null, cancellationToken);
        var applied = (await _store.QueryAsync("SELECT version FROM schema_migrations FINAL", null, cancellationToken))
            .Rows.Select(r => (int)(ulong)r[0]!).ToHashSet();
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
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ({v:UInt32}, {n:String}, {c:String}, {t:DateTime64(3)})",
                QueryParameters.Of(("v", migration.Version), ("n", migration.Name), ("c", migration.Checksum), ("t", _time.GetUtcNow())),
                cancellationToken);
            LogApplied(_logger, migration.Version, migration.Name);
            done.Add(migration.Version);
        }

        await ApplyRetentionAsync(settings, cancellationToken);
        return done;
    }

    // Retention is configuration, not schema: when it changes, the TTL follows without a migration.
    private async Task ApplyRetentionAsync(SchemaSettings settings, CancellationToken cancellationToken)
    {
        var engine = (await _store.QueryAsync(
            "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events'", null, cancellationToken));
        if (engine.Rows.Count == 0)
        {
            return;
        }

        // ClickHouse renders the TTL back as toIntervalDay(N).
        var current = (string)engine.Rows[0][0]!;
        if (current.Contains($"toIntervalDay({settings.RetentionDays})", StringComparison.Ordinal))
        {
            return;
        }

        await _store.ExecuteAsync(
            $"ALTER TABLE events MODIFY TTL toDateTime(ts) + INTERVAL {settings.RetentionDays} DAY SETTINGS materialize_ttl_after_modify = 0", null, cancellationToken);
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

    [GeneratedRegex(@"^Analytics\.Store\.Schema\.(\d{4})_([a-z0-9_]+)\.sql$")]
    private static partial Regex ResourceName();

    [LoggerMessage(Level = LogLevel.Information, Message = "Applied schema migration {Version} ({Name})")]
    private static partial void LogApplied(ILogger logger, int version, string name);

    [LoggerMessage(Level = LogLevel.Information, Message = "Event retention set to {Days} days")]
    private static partial void LogRetention(ILogger logger, int days);
}
