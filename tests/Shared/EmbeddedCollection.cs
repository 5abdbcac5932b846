using Xunit;

namespace Analytics.Testing;

// chDB allows one open engine per process: every test that opens one runs in this collection, one at a time.
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EmbeddedCollection
{
    public const string Name = "embedded chDB";
}
