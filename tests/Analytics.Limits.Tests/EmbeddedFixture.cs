using Analytics.Store.Embedded;
using Xunit;

namespace Analytics.Limits.Tests;

// chDB allows one open engine per process: every test that opens one runs in this collection, one at a time.
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EmbeddedCollection
{
    public const string Name = "embedded chDB";
}

internal sealed class TempDirectory : IDisposable
{
    public TempDirectory() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "analytics-test-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
