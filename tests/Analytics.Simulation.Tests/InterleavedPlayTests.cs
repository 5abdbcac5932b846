using System.Net;
using Analytics.Events;
using Analytics.Limits;

namespace Analytics.Simulation.Tests;

public sealed class InterleavedPlayTests
{
    private static readonly DateTimeOffset Start = new(2026, 11, 2, 9, 0, 0, TimeSpan.Zero);

    /// <summary>
    /// Two campaigns of one list server overlap: each sends a message every 5 s for 10 minutes, together
    /// 24 a minute, under a cap of 30. A server sees their messages interleaved and refuses none; played
    /// one session after the other, the second saw an account bucket the first had already emptied up to
    /// its end, and was refused (world D's newsletter, 88 refusals that no server would have given).
    /// </summary>
    [Fact]
    public void OverlappingSessionsOfOneAccount_ShareItsRateAsTheyGo()
    {
        var world = WorldBuilder.Build(Scenario.Load("small"), Start);
        var account = world.AccountsByName.Values.First();
        var recipient = world.Mailboxes[0];
        var limits = new LimitsOptions { Fixed = { MessagesPerMinute = 30 } };
        SessionScript[] campaigns = [Campaign(world, account, recipient, Start, 1), Campaign(world, account, recipient, Start.AddSeconds(2.5), 2)];

        var interleaved = new List<SmtpEvent>();
        var finished = 0;
        var play = new InterleavedPlay(new ListenerEmulator(world, limits), interleaved.Add, (_, throttled, _) => finished += throttled ? 100 : 1);
        foreach (var script in campaigns)
        {
            play.Add(script);
        }

        play.Finish();
        Assert.Equal(2, finished); // both ended, neither throttled
        Assert.Equal(240, interleaved.Count(e => e.Kind == EventKind.Data && e.ReplyCode == 250));
        Assert.Equal(interleaved.Where(e => e.Kind != EventKind.Delivery).Select(e => e.Timestamp).Order(), interleaved.Where(e => e.Kind != EventKind.Delivery).Select(e => e.Timestamp));

        var oneAfterTheOther = new List<SmtpEvent>();
        var emulator = new ListenerEmulator(world, limits);
        foreach (var script in campaigns)
        {
            emulator.Play(script, oneAfterTheOther.Add);
        }

        Assert.Contains(oneAfterTheOther, e => e.Kind == EventKind.Throttle && e.Detail.Contains("message rate exceeded", StringComparison.Ordinal));
    }

    private static SessionScript Campaign(World world, Account account, string recipient, DateTimeOffset start, ulong id)
    {
        var steps = new List<Step>
        {
            new(StepKind.Ehlo, TimeSpan.FromMilliseconds(10), "lists.example"),
            new(StepKind.StartTls, TimeSpan.FromMilliseconds(5)),
            new(StepKind.Ehlo, TimeSpan.FromMilliseconds(5), "lists.example"),
            new(StepKind.Auth, TimeSpan.FromMilliseconds(10), account.Name, account.Password, "PLAIN"),
        };
        for (var i = 0; i < 120; i++)
        {
            steps.Add(new Step(StepKind.Mail, TimeSpan.FromSeconds(i == 0 ? 0.1 : 4.9), account.Name, Size: 2000));
            steps.Add(new Step(StepKind.Rcpt, TimeSpan.FromMilliseconds(50), recipient));
            steps.Add(new Step(StepKind.Data, TimeSpan.FromMilliseconds(50), Size: 2000));
        }

        steps.Add(new Step(StepKind.Quit, TimeSpan.FromMilliseconds(10)));
        return new SessionScript
        {
            SessionId = id,
            ClientIp = IPAddress.Parse("127.1.200." + id),
            ClientPort = 40000,
            Role = ListenerRole.Submission,
            Start = start,
            Steps = steps,
            Class = "benign",
            Population = "newsletter",
            WellBehaved = true,
        };
    }
}
