using Analytics.Store;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Analytics.Ops.Tests;

[Collection(EmbeddedCollection.Name)]
public sealed class ClusterSchemaTests(StoreFixture fixture)
{
    [Fact]
    public void WithoutCluster_TheScriptIsThePlainSchema()
    {
        var plain = Migrator.Script(new SchemaSettings());
        Assert.DoesNotContain(plain, s => s.Contains("ON CLUSTER", StringComparison.Ordinal) || s.Contains("Replicated", StringComparison.Ordinal) || s.Contains("_local", StringComparison.Ordinal));
        Assert.Equal(Migrator.Embedded.Sum(m => m.Statements(new SchemaSettings()).Count) + 1, plain.Count);
    }

    [Fact]
    public void WithCluster_EveryTableIsReplicatedBehindADistributedTable_AndViewsReadLocalTables()
    {
        var script = Migrator.Script(new SchemaSettings { Cluster = "mail" });
        var creates = script.Where(s => s.StartsWith("CREATE TABLE", StringComparison.Ordinal)).ToList();
        var locals = creates.Where(s => s.Contains("_local ON CLUSTER `mail`", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(locals);

        // Tables that keep nothing (Null engine: the sink's aggregates on their way through a view) have nothing to replicate.
        var nulls = locals.Where(s => s.TrimEnd().EndsWith("ENGINE = Null", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, nulls.Count);
        Assert.All(locals.Except(nulls), s => Assert.Matches(@"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{shard\}/\{database\}/\w+_local', '\{replica\}'", s));
        Assert.Contains(script, s => s.StartsWith("CREATE MATERIALIZED VIEW IF NOT EXISTS activity_in_mv ON CLUSTER `mail` TO activity_local", StringComparison.Ordinal) && s.Contains("FROM activity_in_local", StringComparison.Ordinal));
        Assert.Contains(script, s => s == "DROP VIEW IF EXISTS activity_mv ON CLUSTER `mail`");
        Assert.Equal(locals.Count, creates.Count(s => s.Contains("ENGINE = Distributed(`mail`, currentDatabase(), ", StringComparison.Ordinal)));
        Assert.Contains(script, s => s.StartsWith("CREATE MATERIALIZED VIEW IF NOT EXISTS activity_mv ON CLUSTER `mail` TO activity_local", StringComparison.Ordinal) && s.Contains("FROM events_local", StringComparison.Ordinal));
        Assert.Contains(script, s => s.Contains("Distributed(`mail`, currentDatabase(), users_local, cityHash64(name))", StringComparison.Ordinal));
        Assert.Throws<ArgumentException>(() => Migrator.Script(new SchemaSettings { Cluster = "bad name; DROP" }));
    }

    [Fact]
    public async Task ClusterDdl_ParsesOnTheEmbeddedEngine()
    {
        var ct = TestContext.Current.CancellationToken;
        foreach (var statement in Migrator.Script(new SchemaSettings { Cluster = "mail" }))
        {
            // formatQuery runs ClickHouse's own parser: ON CLUSTER, replicated engines and all.
            var result = await fixture.Store.QueryAsync("SELECT formatQuery({q:String})", QueryParameters.Of(("q", statement)), ct);
            Assert.Contains("CLUSTER", (string)result.Rows[0][0]!, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task ClusterSchema_SingleNodeForm_AppliesOnTheEmbeddedEngine_AndViewsFeedTheLocalTables()
    {
        var ct = TestContext.Current.CancellationToken;
        var store = fixture.Store;
        await store.ExecuteAsync("CREATE DATABASE IF NOT EXISTS cluster_shape", null, ct);
        await store.ExecuteAsync("USE cluster_shape", null, ct);
        try
        {
            Assert.Equal("cluster_shape", (string)(await store.QueryAsync("SELECT currentDatabase()", null, ct)).Rows[0][0]!);
            var settings = new SchemaSettings { Cluster = "mail", SingleNode = true, RetentionDays = 30 };
            var applied = await new Migrator(store, NullLogger.Instance).ApplyAsync(settings, ct);
            Assert.Equal(Migrator.Embedded.Select(m => m.Version), applied);

            // Again: everything is recorded, nothing reapplied.
            Assert.Empty(await new Migrator(store, NullLogger.Instance).ApplyAsync(settings, ct));

            var engines = (await store.QueryAsync("SELECT name, engine FROM system.tables WHERE database = 'cluster_shape'", null, ct)).Rows
                .ToDictionary(r => (string)r[0]!, r => (string)r[1]!);
            Assert.Equal("MergeTree", engines["events_local"]);
            Assert.Equal("Merge", engines["events"]);
            Assert.Equal("AggregatingMergeTree", engines["activity_local"]);

            // Since 0030 the event sink computes the aggregates and writes them through activity_in,
            // whose view feeds the node's activity_local.
            await store.ExecuteAsync(
                "INSERT INTO events_local (ts, node, role, session_id, kind, client_ip, user, outcome, reply_code, status, recipient) VALUES " +
                "(now64(3), 'n1', 'submission', 1, 'rcpt', toIPv6('127.0.0.5'), 'alice', 'reject', 550, '5.1.1', 'bob@example.org')", null, ct);
            await store.ExecuteAsync(
                "INSERT INTO activity_in_local (entity_kind, entity, minute, events, rcpt, rcpt_rejected, rcpt_unknown, ips, recipients, sessions) VALUES " +
                "('user', 'alice', toStartOfMinute(now()), 1, 1, 1, 1, [toIPv6('127.0.0.5')], ['bob@example.org'], [1])", null, ct);
            var unknown = await store.QueryAsync("SELECT sum(rcpt_unknown) FROM activity WHERE entity_kind = 'user' AND entity = 'alice'", null, ct);
            Assert.Equal(1UL, Convert.ToUInt64(unknown.Rows[0][0], System.Globalization.CultureInfo.InvariantCulture));

            // 0061: the minute mask reaches the data and the front, and FINAL (which the feature queries
            // read the hourly rollup with) ORs the masks of two parts of one hour through the front.
            foreach (var mask in new[] { 1, 3 })
            {
                await store.ExecuteAsync(
                    $"INSERT INTO activity_hourly_local (entity_kind, entity, hour, events, active_minutes, minute_mask) VALUES ('ip', '127.0.0.5', '2026-11-20 11:00:00', 1, 1, {mask})", null, ct);
            }

            var final = await store.QueryAsync("SELECT count(), sum(bitCount(minute_mask)) FROM activity_hourly FINAL WHERE entity = '127.0.0.5'", null, ct);
            Assert.Equal(1UL, Convert.ToUInt64(final.Rows[0][0], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(2UL, Convert.ToUInt64(final.Rows[0][1], System.Globalization.CultureInfo.InvariantCulture));
            var ttl = (string)(await store.QueryAsync("SELECT engine_full FROM system.tables WHERE database = 'cluster_shape' AND name = 'events_local'", null, ct)).Rows[0][0]!;
            Assert.Contains("toIntervalDay(30)", ttl, StringComparison.Ordinal);
        }
        finally
        {
            await store.ExecuteAsync("USE default", null, ct);
        }
    }
}
