using System.Threading.Channels;

namespace Analytics.Policy.Tests;

public sealed class MailLogLineTests
{
    [Fact]
    public void Parse_UnknownRecipientReject_FromMaillogFile()
    {
        var line = MailLogLine.Parse("Dec 01 02:58:46 pfexp postfix/smtpd[24963]: NOQUEUE: reject: RCPT from unknown[127.50.0.9]: 550 5.1.1 <nosuch@example.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<x@y.example> to=<nosuch@example.test> proto=ESMTP helo=<vm>");

        Assert.Equal(MailLogKind.RejectRcpt, line.Kind);
        Assert.Equal(24963, line.Pid);
        Assert.Equal("127.50.0.9", line.Client!.ToString());
        Assert.Equal(550, line.Code);
        Assert.Equal("5.1.1", line.Status);
        Assert.Equal("nosuch@example.test", line.Recipient);
        Assert.Equal("x@y.example", line.Sender);
        Assert.Equal("User unknown in virtual mailbox table", line.Text);
        Assert.True(line.UnknownRecipient);
    }

    [Fact]
    public void Parse_RelayDeniedWithQueueIdAndIso8601Timestamp_IsARejectButNotUnknown()
    {
        var line = MailLogLine.Parse("2026-12-01T02:58:46.123456+00:00 mx postfix/submission/smtpd[8]: 4F2A1B22013: reject: RCPT from mail.example[2001:db8::5]: 554 5.7.1 <a@b.example>: Relay access denied; from=<s@x> to=<a@b.example> proto=ESMTP helo=<h>");

        Assert.Equal(MailLogKind.RejectRcpt, line.Kind);
        Assert.Equal("2001:db8::5", line.Client!.ToString());
        Assert.Equal("Relay access denied", line.Text);
        Assert.False(line.UnknownRecipient);
    }

    [Fact]
    public void Parse_SaslFailure_WithAndWithoutTheUser()
    {
        var withUser = MailLogLine.Parse("Dec 01 02:58:40 pfexp postfix/smtpd[24900]: warning: unknown[127.40.0.7]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=alice@example.test");
        var without = MailLogLine.Parse("Dec  1 02:58:40 host postfix/smtpd[1]: warning: unknown[127.40.0.8]: SASL PLAIN authentication failed: authentication failure");

        Assert.Equal(MailLogKind.SaslFailed, withUser.Kind);
        Assert.Equal("LOGIN", withUser.Mechanism);
        Assert.Equal("alice@example.test", withUser.User);
        Assert.Equal(MailLogKind.SaslFailed, without.Kind);
        Assert.Equal("", without.User);
        Assert.Equal("authentication failure", without.Text);
    }

    [Theory]
    [InlineData("Dec 01 02:58:46 pfexp postfix/smtpd[24963]: connect from unknown[127.50.0.9]", "Connect")]
    [InlineData("Dec 01 02:58:46 pfexp postfix/smtpd[24963]: disconnect from unknown[127.50.0.9] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6", "Disconnect")]
    [InlineData("Dec 01 02:58:46 pfexp postfix/qmgr[24815]: BF911B22043: removed", "Other")]
    [InlineData("Dec 01 02:58:46 pfexp postfix/cleanup[1]: reject: RCPT from unknown[1.2.3.4]: 550 5.1.1 <a@b>: x; from=<> to=<a@b>", "Other")]
    [InlineData("garbage", "Other")]
    [InlineData("", "Other")]
    public void Parse_OtherLines(string text, string kind) => Assert.Equal(kind, MailLogLine.Parse(text).Kind.ToString());
}

public sealed class FileFollowerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class Follow : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Channel<string> _lines = Channel.CreateUnbounded<string>();
        private readonly Task _task;

        public Follow(FileFollower follower)
        {
            Follower = follower;
            _task = Task.Run(async () =>
            {
                try
                {
                    await foreach (var line in follower.ReadLinesAsync(_stop.Token))
                    {
                        await _lines.Writer.WriteAsync(line);
                    }
                }
                catch (OperationCanceledException)
                {
                }
            });
        }

        public FileFollower Follower { get; }

        public async Task<string> NextAsync(TimeSpan? within = null)
        {
            // A cancelled channel read takes nothing: the next read still gets the next line.
            using var timeout = new CancellationTokenSource(within ?? TimeSpan.FromSeconds(10));
            return await _lines.Reader.ReadAsync(timeout.Token);
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _task;
            _stop.Dispose();
        }
    }

    private static async Task WaitUntilFollowingAsync(string path, Follow follow, string probe)
    {
        // The follower starts at the end of the file: append until it sees a line (it may open after the first write).
        for (var i = 0; ; i++)
        {
            await File.AppendAllTextAsync(path, probe + i + "\n", Ct);
            try
            {
                var line = await follow.NextAsync(TimeSpan.FromMilliseconds(300));
                Assert.StartsWith(probe, line, StringComparison.Ordinal);
                return;
            }
            catch (OperationCanceledException) when (i < 30)
            {
            }
        }
    }

    [Fact]
    public async Task Follow_StartsAtTheEnd_AndSurvivesRenameAndCreate()
    {
        using var temp = new TempDirectory();
        var path = Path.Combine(temp.Path, "maillog");
        await File.WriteAllTextAsync(path, "old line before start\n", Ct);
        await using var follow = new Follow(new FileFollower(path, TimeSpan.FromMilliseconds(10), TimeProvider.System));
        await WaitUntilFollowingAsync(path, follow, "probe");

        await File.AppendAllTextAsync(path, "one\ntw", Ct);
        await File.AppendAllTextAsync(path, "o\n", Ct);
        Assert.Equal("one", await follow.NextAsync());
        Assert.Equal("two", await follow.NextAsync());

        File.Move(path, path + ".1");
        await File.AppendAllTextAsync(path + ".1", "last of the old file\n", Ct);
        await File.WriteAllTextAsync(path, "first of the new file\n", Ct);

        Assert.Equal("last of the old file", await follow.NextAsync());
        Assert.Equal("first of the new file", await follow.NextAsync());
        Assert.Equal(1, follow.Follower.Reopened);
    }

    [Fact]
    public async Task Follow_SurvivesCopyTruncate()
    {
        using var temp = new TempDirectory();
        var path = Path.Combine(temp.Path, "mail.log");
        await File.WriteAllTextAsync(path, "", Ct);
        await using var follow = new Follow(new FileFollower(path, TimeSpan.FromMilliseconds(10), TimeProvider.System));
        await WaitUntilFollowingAsync(path, follow, "probe");

        await using (var truncate = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            truncate.SetLength(0);
        }

        await Task.Delay(100, Ct);
        await File.AppendAllTextAsync(path, "after truncation\n", Ct);

        Assert.Equal("after truncation", await follow.NextAsync());
    }

    [Fact]
    public async Task Follow_WaitsForAFileThatDoesNotExistYet()
    {
        using var temp = new TempDirectory();
        var path = Path.Combine(temp.Path, "later.log");
        await using var follow = new Follow(new FileFollower(path, TimeSpan.FromMilliseconds(10), TimeProvider.System));
        await Task.Delay(100, Ct);

        await File.WriteAllTextAsync(path, "x\n", Ct);

        Assert.Equal("x", await follow.NextAsync());
    }
}
