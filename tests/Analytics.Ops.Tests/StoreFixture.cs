using Analytics.Store;
using Analytics.Store.Embedded;
using Xunit;

[assembly: AssemblyFixture(typeof(Analytics.Ops.Tests.StoreFixture))]

namespace Analytics.Ops.Tests;

/// <summary>
/// chDB allows one open engine per process: the whole assembly shares this one, with the schema
/// applied, and the tests that use it run one at a time (collection below).
/// </summary>
public sealed class StoreFixture : IAsyncLifetime
{
    private readonly TempDirectory _directory = new();

    public IClickHouseStore Store { get; private set; } = null!;

    public string DataDirectory => _directory.Path;

    public async ValueTask InitializeAsync() =>
        Store = await StoreFactory.OpenAndMigrateAsync(new StoreOptions(), _directory.Path, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);

    public async ValueTask DisposeAsync()
    {
        await Store.DisposeAsync();
        _directory.Dispose();
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EmbeddedCollection
{
    public const string Name = "embedded chDB";
}
