using System.Diagnostics;
using System.IO.Pipelines;
using System.Text;
using Analytics.Events;
using Analytics.Limits;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Policy.Tests;

public sealed class PostfixRequestReaderTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static PostfixRequestReader Reader(string text, int maxLine = 256, int maxAttributes = 100) =>
        new(PipeReader.Create(new MemoryStream(Encoding.UTF8.GetBytes(text))), maxLine, maxAttributes);

    [Fact]
    public async Task ReadAsync_TwoRequestsInOneWrite_ReturnsEachThenTheEnd()
    {
        var reader = Reader("request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=a@x\n\nrequest=smtpd_access_policy\nrecipient=b@x\ninstance=9\n\n");

        var first = await reader.ReadAsync(Ct);
        var second = await reader.ReadAsync(Ct);
        var end = await reader.ReadAsync(Ct);

        Assert.Null(first.Error);
        Assert.Equal("a@x", first.Request!.Recipient);
        Assert.Equal("RCPT", first.Request.ProtocolState);
        Assert.Equal("b@x", second.Request!.Recipient);
        Assert.Equal("9", second.Request.Instance);
        Assert.True(end.End);
        Assert.False(end.Truncated);
    }

    [Fact]
    public async Task ReadAsync_AttributeLongerThanTheLimit_IsAnErrorAndTheNextRequestReadsFine()
    {
        var reader = Reader("request=smtpd_access_policy\nrecipient=" + new string('x', 5000) + "\nsender=s@x\n\nrecipient=ok@x\n\n", maxLine: 256);

        var bad = await reader.ReadAsync(Ct);
        var good = await reader.ReadAsync(Ct);

        Assert.Contains("longer than 256 bytes", bad.Error, StringComparison.Ordinal);
        Assert.False(bad.End);
        Assert.Null(good.Error);
        Assert.Equal("ok@x", good.Request!.Recipient);
    }

    [Fact]
    public async Task ReadAsync_ConnectionEndsWithoutTheEmptyLine_IsTruncated()
    {
        var reader = Reader("request=smtpd_access_policy\nrecipient=a@x\n");

        var read = await reader.ReadAsync(Ct);

        Assert.True(read.Truncated);
        Assert.Contains("no final empty line", read.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadAsync_LineWithoutEquals_IsAnErrorNamingIt()
    {
        var read = await Reader("request=smtpd_access_policy\nGET / HTTP/1.1\n\n").ReadAsync(Ct);

        Assert.Contains("without '='", read.Error, StringComparison.Ordinal);
        Assert.Contains("GET / HTTP/1.1", read.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadAsync_TooManyAttributes_IsAnError()
    {
        var text = string.Concat(Enumerable.Range(0, 50).Select(i => $"x{i}=1\n")) + "\n";

        var read = await Reader(text, maxAttributes: 20).ReadAsync(Ct);

        Assert.Contains("more than 20 attributes", read.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadAsync_InvalidUtf8AndCrLf_AreReadWithoutThrowing()
    {
        var bytes = Encoding.ASCII.GetBytes("recipient=a").Concat(new byte[] { 0xff, 0xfe }).Concat(Encoding.ASCII.GetBytes("@x\r\nsender=s@x\r\n\r\n")).ToArray();
        var reader = new PostfixRequestReader(PipeReader.Create(new MemoryStream(bytes)), 256, 100);

        var read = await reader.ReadAsync(Ct);

        Assert.Null(read.Error);
        Assert.Equal("a\uFFFD\uFFFD@x", read.Request!.Recipient);
        Assert.Equal("s@x", read.Request.Sender);
    }
}

/// <summary>The policy service over a real Unix socket, with the engine in process (no Postfix): what Postfix would be told.</summary>
public sealed class PostfixPolicyServiceTests : IAsyncLifetime
{
    private readonly TempDirectory _temp = new();
    private readonly EventLog _events = new();
    private PolicyEngine _engine = null!;
    private PostfixPolicyServer _server = null!;

    private ValueTask StartAsync(LimitsOptions? limits = null, PolicyOptions? options = null, LimitBook? book = null)
    {
        options ??= new PolicyOptions();
        options.PostfixEndpoint = "unix:" + Path.Combine(_temp.Path, "policy.sock");
        _engine = Engines.Create(_events, options, limits, book: book);
        _server = new PostfixPolicyServer(_engine, PolicyEndpoint.Parse(options.PostfixEndpoint, allowUnix: true), NullLogger.Instance);
        _server.Start();
        return ValueTask.CompletedTask;
    }

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }

        _temp.Dispose();
    }

    [Fact]
    public async Task Garbage_IsAnsweredDunno_AndTheSameConnectionGoesOn()
    {
        await StartAsync();
        await using var client = await PolicyClient.ConnectAsync(_server.Address);

        var oversized = await client.SendRawAsync(Encoding.ASCII.GetBytes("request=smtpd_access_policy\nrecipient=" + new string('a', 100_000) + "\n\n"));
        var noEquals = await client.SendRawAsync("this is not a policy request\n\n"u8.ToArray());
        var good = await client.AskAsync();

        Assert.Equal("DUNNO", oversized);
        Assert.Equal("DUNNO", noEquals);
        Assert.Equal("DUNNO", good);
    }

    [Fact]
    public async Task RequestWithoutItsEmptyLine_IsAnsweredDunno_BeforeTheConnectionCloses()
    {
        await StartAsync();
        await using var client = await PolicyClient.ConnectAsync(_server.Address);

        await client.WriteAsync("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=127.0.0.9\n"u8.ToArray());
        client.ShutdownSend();

        Assert.Equal("DUNNO", await client.ReadActionAsync());
    }

    [Fact]
    public async Task RcptAndEndOfMessage_BecomeTheListenersEvents_MarkedAsPostfix()
    {
        await StartAsync();
        await using var client = await PolicyClient.ConnectAsync(_server.Address);
        (string, string)[] session = [("client_address", "127.3.0.1"), ("client_port", "5000"), ("sasl_username", "Alice@Example.TEST"), ("sasl_method", "PLAIN"), ("instance", "m1")];

        Assert.Equal("DUNNO", await client.AskAsync([.. session, ("recipient", "bob@example.test")]));
        Assert.Equal("DUNNO", await client.AskAsync([.. session, ("recipient", "carol@example.net")]));
        Assert.Equal("DUNNO", await client.AskAsync([.. session, ("protocol_state", "END-OF-MESSAGE"), ("recipient", ""), ("recipient_count", "2"), ("size", "1234"), ("queue_id", "ABC")]));

        var events = _events.All.Where(e => e.ClientIp.ToString() == "127.3.0.1").ToList();
        Assert.All(events, e => Assert.Equal("postfix", e.Node));
        Assert.All(events, e => Assert.Equal(ListenerRole.Submission, e.Role));
        Assert.Single(events.Select(e => e.SessionId).Distinct());
        Assert.Equal([EventKind.Connect, EventKind.Ehlo, EventKind.Auth, EventKind.Mail, EventKind.Rcpt, EventKind.Rcpt, EventKind.Data], events.Select(e => e.Kind));
        Assert.Equal("alice@example.test", events.Single(e => e.Kind == EventKind.Auth).User);
        Assert.Equal(["bob@example.test", "carol@example.net"], events.Where(e => e.Kind == EventKind.Rcpt).Select(e => e.Recipient));
        var data = events.Single(e => e.Kind == EventKind.Data);
        Assert.Equal("recipients=2 queued=ABC", data.Detail);
        Assert.Equal(1234UL, data.Size);
    }

    [Fact]
    public async Task BlockedAccount_IsRefusedAtRcpt()
    {
        await StartAsync(new LimitsOptions { Fixed = { BlockedUsers = ["mallory@example.test"] } });
        await using var client = await PolicyClient.ConnectAsync(_server.Address);

        var action = await client.AskAsync(("client_address", "127.3.0.2"), ("sasl_username", "mallory@example.test"), ("instance", "m1"));

        Assert.Equal("550 5.7.1 Sending refused by policy", action);
        Assert.Contains(_events.Of(EventKind.Throttle), e => e.Detail == "mail: user blocked");
    }

    [Fact]
    public async Task MessageRate_CountsOneMessagePerTransaction_AndDefersTheThird()
    {
        await StartAsync(new LimitsOptions { Fixed = { MessagesPerMinute = 2 } });
        await using var client = await PolicyClient.ConnectAsync(_server.Address);
        var answers = new List<string>();
        foreach (var instance in new[] { "m1", "m2", "m3" })
        {
            foreach (var rcpt in new[] { "a@example.net", "b@example.net", "c@example.net" })
            {
                answers.Add(await client.AskAsync(("client_address", "127.3.0.3"), ("sasl_username", "bulk@example.test"), ("instance", instance), ("recipient", rcpt)));
            }
        }

        Assert.Equal(["DUNNO", "DUNNO", "DUNNO", "DUNNO", "DUNNO", "DUNNO"], answers.Take(6));
        Assert.All(answers.Skip(6), a => Assert.Equal("451 4.7.1 Rate limit reached, try again later", a));
        Assert.Equal(3, _events.Of(EventKind.Mail).Count());
        Assert.Equal(3, _events.Of(EventKind.Rcpt).Count(e => e.ReplyCode == 451));
    }

    [Fact]
    public async Task RecipientsPerMessage_PastTheCap_Are452()
    {
        await StartAsync(new LimitsOptions { Session = { MaxRecipientsPerMessage = 2 } });
        await using var client = await PolicyClient.ConnectAsync(_server.Address);

        var answers = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            answers.Add(await client.AskAsync(("client_address", "127.3.0.4"), ("instance", "m1"), ("recipient", $"r{i}@example.test")));
        }

        Assert.Equal(["DUNNO", "DUNNO", "452 4.5.3 Too many recipients"], answers);
    }

    [Fact]
    public async Task UnknownRecipientsInTheLog_HoldTheClient_AtItsNextCommand()
    {
        await StartAsync();
        await using var client = await PolicyClient.ConnectAsync(_server.Address);
        (string, string)[] gate = [("client_address", "127.3.0.5"), ("client_port", "6000"), ("policy_context", "connect"), ("instance", "h1")];
        Assert.Equal("DUNNO", await client.AskAsync([.. gate, ("recipient", "aaron@example.test")]));

        var reader = new MailLogReader(_engine, NullLogger.Instance);
        for (var i = 0; i < 8; i++)
        {
            reader.Apply(MailLogLine.Parse(
                $"Dec  1 02:58:46 mx postfix/smtpd[77]: NOQUEUE: reject: RCPT from unknown[127.3.0.5]: 550 5.1.1 <n{i}@example.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<p@bulk.example> to=<n{i}@example.test> proto=ESMTP helo=<bulk>"));
        }

        var next = await client.AskAsync([.. gate, ("recipient", "zoe@example.test")]);
        await using var other = await PolicyClient.ConnectAsync(_server.Address);
        var reconnected = await other.AskAsync(("client_address", "127.3.0.5"), ("client_port", "6001"), ("policy_context", "connect"), ("instance", "h2"));

        Assert.StartsWith("421 4.7.0", next, StringComparison.Ordinal);
        Assert.StartsWith("421 4.7.0", reconnected, StringComparison.Ordinal);
        var unknown = _events.Of(EventKind.Rcpt).Where(e => e.Status == "5.1.1").ToList();
        Assert.Equal(8, unknown.Count);
        Assert.All(unknown, e => Assert.Equal("postfix", e.Node));
        Assert.Contains(_events.Of(EventKind.Throttle), e => e.Detail.StartsWith("hold ip 127.3.0.5", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SaslFailuresInTheLog_WithoutDovecotsPolicy_AreFailedLogins_ThatLockTheAccount()
    {
        await StartAsync();
        var reader = new MailLogReader(_engine, NullLogger.Instance);
        for (var i = 0; i < 5; i++)
        {
            reader.Apply(MailLogLine.Parse(
                $"Dec  1 02:58:40 mx postfix/smtpd[{90 + i}]: warning: unknown[127.3.1.{i + 1}]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=Victim@Example.test"));
        }

        var failures = _events.Of(EventKind.Auth).ToList();
        Assert.Equal(5, failures.Count);
        Assert.All(failures, e => Assert.Equal(("postfix", 535, "victim@example.test", "LOGIN"), (e.Node, (int)e.ReplyCode, e.User, e.Mechanism)));
        Assert.Contains(_events.Of(EventKind.Throttle), e => e.Detail.StartsWith("lock user", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SaslFailuresInTheLog_WithDovecotsPolicy_AreLeftToDovecot()
    {
        await StartAsync(options: new PolicyOptions { DovecotEndpoint = "127.0.0.1:0" });
        var reader = new MailLogReader(_engine, NullLogger.Instance);

        reader.Apply(MailLogLine.Parse("Dec  1 02:58:40 mx postfix/smtpd[9]: warning: unknown[127.3.1.9]: SASL PLAIN authentication failed: x, sasl_username=a@example.test"));

        Assert.Empty(_events.Of(EventKind.Auth));
    }

    [Fact]
    public async Task OwnRefusalsInTheLog_AreNotCountedAgain()
    {
        await StartAsync(new LimitsOptions { Fixed = { BlockedUsers = ["mallory@example.test"] } });
        await using var client = await PolicyClient.ConnectAsync(_server.Address);
        await client.AskAsync(("client_address", "127.3.0.6"), ("sasl_username", "mallory@example.test"), ("instance", "m1"));
        var rcptEvents = _events.Of(EventKind.Rcpt).Count();

        var reader = new MailLogReader(_engine, NullLogger.Instance);
        reader.Apply(MailLogLine.Parse(
            "Dec  1 02:58:46 mx postfix/smtpd[78]: NOQUEUE: reject: RCPT from unknown[127.3.0.6]: 550 5.7.1 <alice@example.test>: Recipient address rejected: Sending refused by policy; from=<m@x> to=<alice@example.test> proto=ESMTP helo=<h>"));

        Assert.Equal(rcptEvents, _events.Of(EventKind.Rcpt).Count());
    }

    [Fact]
    public async Task Tarpit_HoldsTheAnswerBack()
    {
        var limits = new LimitsOptions();
        var book = new LimitBook(limits, TimeProvider.System);
        await StartAsync(limits, book: book);
        book.Replace(
        [
            new EntityLimit { Entity = EntityRef.Ip(System.Net.IPAddress.Parse("127.3.0.7")), Level = LimitLevel.Throttle, Source = LimitSource.Override, Tarpit = TimeSpan.FromMilliseconds(600), Reason = "slow down" },
        ]);
        await using var client = await PolicyClient.ConnectAsync(_server.Address);

        var watch = Stopwatch.StartNew();
        var action = await client.AskAsync(("client_address", "127.3.0.7"), ("instance", "t1"));

        Assert.Equal("DUNNO", action);
        Assert.InRange(watch.ElapsedMilliseconds, 550, 5000);
    }
}
