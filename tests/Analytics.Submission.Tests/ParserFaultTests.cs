using System.Net;
using System.Text;

namespace Analytics.Submission.Tests;

/// <summary>
/// Input shapes that `chaos fuzz-smtp` found to fault SmtpServer's parser (the session dropped without
/// a reply and an error logged): each now gets a reply and the session goes on.
/// </summary>
public sealed class ParserFaultTests(StoreFixture fixture)
{
    [Fact]
    public async Task AnEsmtpParameterGivenTwice_IsASyntaxError_AndTheSessionGoesOn()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var client = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.46.0.1"));
        Assert.StartsWith("250", await client.CommandAsync("EHLO fuzz.example"), StringComparison.Ordinal);
        Assert.StartsWith("50", await client.CommandAsync("MAIL FROM:<a@remote.example> BODY=7BIT BODY=8BITMIME"), StringComparison.Ordinal);
        Assert.StartsWith("250", await client.CommandAsync("NOOP"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("MAIL FROM:<\"racx\\qp \\\"x\"@fuzz.example>")]
    [InlineData("RCPT TO:<\"a\\q\"@fuzz.example>")]
    [InlineData("MAIL FROM:<a\\@fuzz.example> SIZE=10")]
    public async Task ABackslashInThePath_IsASyntaxError_AndTheSessionGoesOn(string line)
    {
        // SmtpServer unescapes a quoted local part with Regex.Unescape, which throws on "\q".
        await using var h = await Harness.StartAsync(fixture);
        await using var client = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.50.0.1"));
        Assert.StartsWith("250", await client.CommandAsync("EHLO fuzz.example"), StringComparison.Ordinal);
        if (line.StartsWith("RCPT", StringComparison.Ordinal))
        {
            Assert.StartsWith("250", await client.CommandAsync("MAIL FROM:<a@remote.example>"), StringComparison.Ordinal);
        }

        Assert.StartsWith("50", await client.CommandAsync(line), StringComparison.Ordinal);
        Assert.StartsWith("250", await client.CommandAsync("NOOP"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ALineThatArrivesInTwoPieces_AcrossTwoBufferSegments_IsAnswered()
    {
        // The first piece (no CRLF) fills most of the reader's first 4 KB segment, so the rest lands in a
        // second segment. SmtpServer had started its search in the first read's buffer and then got the
        // line as a contiguous copy: "End position was not reached", the session dropped without a reply.
        await using var h = await Harness.StartAsync(fixture);
        await using var client = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.47.0.1"));
        await client.SendAsync(Encoding.ASCII.GetBytes("NOOP " + new string('a', 3500)));
        await Task.Delay(300, TestContext.Current.CancellationToken);
        await client.SendAsync(Encoding.ASCII.GetBytes(new string('b', 100) + "\r\nNOOP\r\n"));
        Assert.NotNull(await client.ReadReplyAsync());
        Assert.StartsWith("250", await client.ReadReplyAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task PipelinedLines_OneAcrossTheFirstSegmentsEnd_AreEachAnswered()
    {
        // One write of many short lines, one of them across the 4 KB boundary of the reader's buffer.
        await using var h = await Harness.StartAsync(fixture);
        await using var client = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.48.0.1"));
        var lines = Enumerable.Range(0, 60).Select(i => "HELP " + new string((char)('a' + (i % 26)), 90 + i)).Append("NOOP").ToList();
        await client.SendAsync(Encoding.ASCII.GetBytes(string.Concat(lines.Select(l => l + "\r\n"))));
        for (var i = 1; i < lines.Count; i++)
        {
            Assert.NotNull(await client.ReadReplyAsync());
        }

        Assert.StartsWith("250", await client.ReadReplyAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task BareLineFeeds_AreOneLineUpToTheCrlf_NotAHang()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var client = await RawSmtp.ConnectAsync(h.Mx, from: IPAddress.Parse("127.49.0.1"));
        await client.SendAsync("NOOP\nNOOP\n"u8.ToArray());
        await Task.Delay(200, TestContext.Current.CancellationToken);
        await client.SendAsync("NOOP\r\nNOOP\r\n"u8.ToArray());
        Assert.NotNull(await client.ReadReplyAsync());
        Assert.StartsWith("250", await client.ReadReplyAsync(), StringComparison.Ordinal);
    }
}
