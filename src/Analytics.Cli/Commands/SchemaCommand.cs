using System.CommandLine;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>analytics schema apply [--cluster NAME] [--print]</c>: brings the store's schema up to date. Every
/// process does that for one server at start; on a ClickHouse cluster it is run once, from one
/// machine, with <c>--cluster</c>, before the nodes are started or upgraded.
/// </summary>
internal static class SchemaCommand
{
    public static Command Create(CommandContext context)
    {
        var cluster = new Option<string?>("--cluster")
        {
            Description = "ClickHouse cluster (remote_servers name): tables are created ON CLUSTER as replicated *_local tables behind Distributed tables",
            HelpName = "NAME",
        };
        var print = new Option<bool>("--print") { Description = "Print the DDL instead of running it (review before an upgrade; needs no store)" };
        var apply = new Command("apply", "Apply the schema migrations that are missing (ON CLUSTER with --cluster)") { cluster, print };
        apply.SetAction(async (parse, cancellationToken) =>
        {
            var settings = CommandContext.Settings(parse);
            var schema = new SchemaSettings { RetentionDays = settings.Store.RetentionDays, Cluster = parse.GetValue(cluster) };
            IReadOnlyList<string> script;
            try
            {
                script = Migrator.Script(schema);
            }
            catch (ArgumentException ex)
            {
                throw new CliException(ex.Message, 2);
            }

            if (parse.GetValue(print))
            {
                foreach (var statement in script)
                {
                    await context.IO.Out.WriteLineAsync(statement + ";\n");
                }

                return 0;
            }

            if (schema.Cluster is not null && string.IsNullOrWhiteSpace(settings.Store.Server))
            {
                throw new CliException("--cluster needs a ClickHouse server (Store:Server): the embedded engine is one machine.", 2);
            }

            IClickHouseStore store;
            try
            {
                store = string.IsNullOrWhiteSpace(settings.Store.Server)
                    ? EmbeddedStore.Open(settings.DataDirectory)
                    : await Store.Server.ServerStore.OpenAsync(settings.Store.Server, cancellationToken);
            }
            catch (DataDirectoryInUseException ex)
            {
                throw new CliException(ex.Message + " (serve applies the schema itself at start)", 2);
            }
            catch (StoreUnavailableException ex)
            {
                throw new CliException(ex.Message, 2);
            }

            await using (store)
            {
                try
                {
                    var applied = await new Migrator(store, NullLogger.Instance).ApplyAsync(schema, cancellationToken);
                    await context.IO.Out.WriteLineAsync(applied.Count == 0
                        ? $"schema up to date on {store.Backend} store {store.Location}{(schema.Cluster is null ? "" : " (cluster " + schema.Cluster + ")")}"
                        : $"applied {string.Join(", ", applied)} on {store.Backend} store {store.Location}{(schema.Cluster is null ? "" : " (cluster " + schema.Cluster + ")")}");
                }
                catch (ClickHouseException ex)
                {
                    throw new CliException("The schema could not be applied: " + ex.Message, 2);
                }
            }

            return 0;
        });
        return new Command("schema", "The store's schema: apply migrations, on one server or ON CLUSTER") { apply };
    }
}
