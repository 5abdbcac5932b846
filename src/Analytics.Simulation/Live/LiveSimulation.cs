using System.Net;
using Analytics.Events;
using Analytics.Store;
using Analytics.Submission;

namespace Analytics.Simulation.Live;

/// <summary>Where the running listener is.</summary>
public sealed record LiveTargets(IPEndPoint Submission, IPEndPoint Mx)
{
    public IPEndPoint For(ListenerRole role) => role == ListenerRole.Mx ? Mx : Submission;
}

/// <summary>
/// Live mode: the world's sessions over real SMTP against a running listener, each from its own
/// loopback address, on the simulated schedule divided by <c>speed</c> (1 = real time).
/// </summary>
public static class LiveSimulation
{
    /// <summary>
    /// Makes the world's accounts and mailboxes exist in the server's directories (through the
    /// Submission project's stores). Accounts that exist keep their password. Simulated accounts are
    /// hashed with <paramref name="iterations"/> PBKDF2 rounds (each hash records its own count).
    /// </summary>
    public static async Task<(int Users, int Mailboxes)> SeedAsync(IClickHouseStore store, World world, int iterations, CancellationToken cancellationToken)
    {
        var users = new UserStore(store, new PasswordHasher(iterations));
        var existing = (await users.ListAsync(cancellationToken)).Select(u => u.Name).ToHashSet(StringComparer.Ordinal);
        var added = 0;
        foreach (var account in world.Accounts)
        {
            if (!existing.Contains(AccountName.Normalize(account.Name)))
            {
                await users.AddAsync(account.Name, account.Password, cancellationToken);
                added++;
            }
        }

        var recipients = new RecipientStore(store);
        var lines = world.Domains.Select(d => "@" + d).Concat(world.Mailboxes);
        var result = await recipients.ImportAsync(new StringReader(string.Join('\n', lines)), cancellationToken);
        return (added, result.Mailboxes);
    }

    /// <summary>Runs every session of the world live; returns the number of sessions played.</summary>
    public static async Task<long> RunAsync(World world, LiveTargets targets, double speed, TimeProvider time, int maxConcurrent,
        IProgress<SimulationProgress>? progress, CancellationToken cancellationToken)
    {
        var started = time.GetTimestamp();
        using var gate = new SemaphoreSlim(maxConcurrent);
        var running = new List<Task>();
        long sessions = 0;
        for (var day = 0; day < world.Scenario.Days; day++)
        {
            foreach (var script in FastSimulation.PlanDay(world, day))
            {
                var due = (script.Start - world.Start) / speed;
                var wait = due - time.GetElapsedTime(started);
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, time, cancellationToken);
                }

                await gate.WaitAsync(cancellationToken);
                running.Add(Task.Run(async () =>
                {
                    try
                    {
                        await LiveClient.RunAsync(script, targets.For(script.Role), speed, time, cancellationToken);
                    }
                    finally
                    {
                        gate.Release();
                    }
                }, cancellationToken));
                sessions++;
                if (running.Count > 4 * maxConcurrent)
                {
                    running.RemoveAll(t => t.IsCompleted);
                }

                if (sessions % 100 == 0)
                {
                    progress?.Report(new SimulationProgress(day + 1, world.Scenario.Days, sessions, 0));
                }
            }

            progress?.Report(new SimulationProgress(day + 1, world.Scenario.Days, sessions, 0));
        }

        await Task.WhenAll(running);
        return sessions;
    }
}
