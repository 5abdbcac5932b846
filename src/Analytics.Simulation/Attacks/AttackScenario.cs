using System.Net;
using Analytics.Store;

namespace Analytics.Simulation.Attacks;

/// <summary>Where the running server listens and what the clients record.</summary>
public sealed record AttackContext(ScenarioWorld World, IPEndPoint Submission, IPEndPoint Mx, ClientLog Log, TimeProvider Time);

/// <summary>
/// One attack against a live server. The runner seeds the directories, starts <c>serve</c>, runs the
/// legitimate population alongside <see cref="AttackAsync"/>, stops the server and hands the store
/// and what the clients saw to <see cref="Report"/>.
/// </summary>
public abstract class AttackScenario
{
    public abstract string Name { get; }

    public abstract string Description { get; }

    /// <summary>Every source address the attack uses.</summary>
    public abstract IReadOnlyList<IPAddress> AttackIps { get; }

    /// <summary>The unit time-to-limit is measured per: the IP itself, or its /24 for a distributed attack.</summary>
    public virtual string UnitOf(IPAddress ip) => ip.ToString();

    /// <summary>Anything the attack needs in the store before the server starts (account history).</summary>
    public virtual Task SeedAsync(IClickHouseStore store, ScenarioWorld world, string dataDirectory, CancellationToken cancellationToken) => Task.CompletedTask;

    public abstract Task AttackAsync(AttackContext context, CancellationToken cancellationToken);

    /// <summary>The scenario's own figures and targets, from what the attacker saw.</summary>
    public abstract void Report(ScenarioReport report, ClientLog log, ScenarioWorld world);

    public static string Net24(IPAddress ip)
    {
        var b = ip.GetAddressBytes();
        return $"{b[0]}.{b[1]}.{b[2]}.0/24";
    }

    /// <summary>Password checks the attacker got (235 or 535), in order, up to the first refusal by policy (454, or 421 before the greeting).</summary>
    public static (int BeforeLock, int Total, bool Locked) AuthChecks(IEnumerable<ClientRecord> records)
    {
        int before = 0, total = 0;
        var locked = false;
        foreach (var r in records)
        {
            var refused = (r.Step == "auth" && r.Code == 454) || (r.Step == "connect" && r.Code is not 220 and not 0);
            if (refused)
            {
                locked = true;
            }

            if (r.Step == "auth" && r.Code is 235 or 535)
            {
                total++;
                if (!locked)
                {
                    before++;
                }
            }
        }

        return (before, total, locked);
    }
}
