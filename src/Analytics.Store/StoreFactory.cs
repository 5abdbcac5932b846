using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.Extensions.Logging;

namespace Analytics.Store;

public static class StoreFactory
{
    /// <summary>Opens the configured store (embedded in <paramref name="dataDirectory"/> unless a server is set).</summary>
    public static IClickHouseStore Open(StoreOptions options, string dataDirectory) =>
        string.IsNullOrWhiteSpace(options.Server)
            ? EmbeddedStore.Open(dataDirectory)
            : Server.ServerStore.Open(options.Server);

    /// <summary>Opens the store and brings its schema up to date.</summary>
    public static async Task<IClickHouseStore> OpenAndMigrateAsync(StoreOptions options, string dataDirectory, ILogger logger, CancellationToken cancellationToken = default)
    {
        IClickHouseStore store = string.IsNullOrWhiteSpace(options.Server)
            ? EmbeddedStore.Open(dataDirectory)
            : await Server.ServerStore.OpenAsync(options.Server, cancellationToken);
        try
        {
            await new Migrator(store, logger).ApplyAsync(new SchemaSettings { RetentionDays = options.RetentionDays }, cancellationToken);
            return store;
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }
}
