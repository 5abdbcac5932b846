using Xunit;

namespace Analytics.Cli.Tests;

/// <summary>
/// Tests that measure time (the scenarios' time to limit) run after the others, alone: on two cores,
/// the other classes' serve and bench processes running beside them would be measured too.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AloneCollection
{
    public const string Name = "Timing: runs alone";
}
