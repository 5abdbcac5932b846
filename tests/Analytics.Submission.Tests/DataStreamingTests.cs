using System.Net;
using System.Text;

namespace Analytics.Submission.Tests;

/// <summary>
/// DATA goes to the spool's disk as it arrives: many large messages at once hold no memory, the bytes
/// in flight across sessions are capped (452 4.3.1 past the cap), and what is accepted is the message
/// exactly, unstuffed.
/// </summary>
[Collection(MemoryMeasured.Name)]
public sealed class DataStreamingTests(StoreFixture fixture)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<RawSmtp> StartDataAsync(Harness h, IPAddress from)
    {
        var client = await RawSmtp.ConnectAsync(h.Mx, from: from);
        Assert.StartsWith("250", await client.CommandAsync("EHLO sender.example"), StringComparison.Ordinal);
        Assert.StartsWith("250", await client.CommandAsync("MAIL FROM:<someone@remote.example>"), StringComparison.Ordinal);
        Assert.StartsWith("250", await client.CommandAsync($"RCPT TO:<alice@{h.Domain}>"), StringComparison.Ordinal);
        Assert.StartsWith("354", await client.CommandAsync("DATA"), StringComparison.Ordinal);
        return client;
    }

    private static byte[] Body(int bytes)
    {
        var line = Encoding.ASCII.GetBytes(new string('x', 998) + "\r\n");
        var body = new byte[bytes / line.Length * line.Length];
        for (var i = 0; i < body.Length; i += line.Length)
        {
            line.CopyTo(body, i);
        }

        return body;
    }

    [Fact]
    public async Task ManyLargeMessagesAtOnce_AreOnDisk_NotInMemory()
    {
        // 16 unauthenticated MX sessions each half way through a 4 MB message: the old listener held
        // every byte of each in its pipe (64 MB; 2,000 such sessions were 50 GB).
        const int sessions = 16;
        var body = Body(4 << 20);
        await using var h = await Harness.StartAsync(fixture);
        var clients = new List<RawSmtp>();
        try
        {
            var before = GC.GetTotalMemory(forceFullCollection: true);
            for (var i = 0; i < sessions; i++)
            {
                clients.Add(await StartDataAsync(h, IPAddress.Parse($"127.41.{i}.1")));
            }

            await Task.WhenAll(clients.Select(c => c.SendAsync(body)));
            await Harness.EventuallyAsync(() => h.Listener.DataBytesInFlight >= (long)sessions * body.Length, 30_000);
            var held = GC.GetTotalMemory(forceFullCollection: true) - before;
            Assert.True(held < 16L << 20, $"{held / 1048576.0:0.0} MB of managed memory held for {sessions} messages in DATA");
            Assert.Equal(sessions, Directory.GetFiles(h.Listener.SpoolDirectory, "*.eml.tmp").Length);

            // Each message, finished, is accepted whole.
            foreach (var c in clients)
            {
                await c.SendAsync(".\r\n"u8.ToArray());
                Assert.StartsWith("250 2.0.0", await c.ReadReplyAsync(), StringComparison.Ordinal);
            }

            Assert.Equal(0, h.Listener.DataBytesInFlight);
            var stored = Directory.GetFiles(h.Listener.SpoolDirectory, "*.eml");
            Assert.Equal(sessions, stored.Length);
            Assert.All(stored, path => Assert.Equal(body.Length, new FileInfo(path).Length));
            Assert.Empty(Directory.GetFiles(h.Listener.SpoolDirectory, "*.tmp"));
        }
        finally
        {
            foreach (var c in clients)
            {
                await c.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task PastTheBytesInFlightCap_AMessageGets452_AndIsAcceptedOnceThereIsRoom()
    {
        await using var h = await Harness.StartAsync(fixture, limits: l => l.Session.MaxDataInFlightBytes = 1 << 20);
        await using var big = await StartDataAsync(h, IPAddress.Parse("127.42.0.1"));
        await big.SendAsync(Body(800 << 10));
        await Harness.EventuallyAsync(() => h.Listener.DataBytesInFlight >= 700 << 10);

        // A second message does not fit beside the first: read to its end and refused, the session goes on.
        var second = Body(400 << 10);
        await using var other = await StartDataAsync(h, IPAddress.Parse("127.43.0.1"));
        await other.SendAsync([.. second, .. ".\r\n"u8]);
        var refused = await other.ReadReplyAsync();
        Assert.StartsWith("452 4.3.1", refused, StringComparison.Ordinal);
        Assert.Equal(1, h.Listener.DataRefusedOverCap);

        await big.SendAsync(".\r\n"u8.ToArray());
        Assert.StartsWith("250", await big.ReadReplyAsync(), StringComparison.Ordinal);
        Assert.Equal(0, h.Listener.DataBytesInFlight);

        Assert.StartsWith("250", await other.CommandAsync("MAIL FROM:<someone@remote.example>"), StringComparison.Ordinal);
        Assert.StartsWith("250", await other.CommandAsync($"RCPT TO:<alice@{h.Domain}>"), StringComparison.Ordinal);
        Assert.StartsWith("354", await other.CommandAsync("DATA"), StringComparison.Ordinal);
        await other.SendAsync([.. second, .. ".\r\n"u8]);
        Assert.StartsWith("250", await other.ReadReplyAsync(), StringComparison.Ordinal);
        Assert.InRange(h.Listener.DataBytesInFlightPeak, 800 << 10, 1 << 20);
        Assert.Equal(2, Directory.GetFiles(h.Listener.SpoolDirectory, "*.eml").Length);
        Assert.Empty(Directory.GetFiles(h.Listener.SpoolDirectory, "*.tmp"));
    }

    [Fact]
    public async Task TheStoredMessage_IsUnstuffed_AndOnlyCrlfDotCrlfEndsIt()
    {
        await using var h = await Harness.StartAsync(fixture);
        await using var client = await StartDataAsync(h, IPAddress.Parse("127.44.0.1"));

        // "..": a line of one dot; "..x": ".x"; ".y": "y" (RFC 5321 4.5.2); "\n.\n" and "\r\n.\n" are text, not
        // the end (a bare LF ends no line: no second message smuggled in), the latter a line ".\nc" whose dot is stuffing.
        await client.SendAsync("Subject: dots\r\n\r\n..\r\n...x\r\n.y\r\na\n.\nb\r\n.\nc\r\n.\r\n"u8.ToArray());
        var reply = await client.ReadReplyAsync();
        Assert.StartsWith("250 2.0.0", reply, StringComparison.Ordinal);
        var id = reply![(reply!.IndexOf("queued as ", StringComparison.Ordinal) + 10)..].Trim();
        var stored = await File.ReadAllTextAsync(Path.Combine(h.Listener.SpoolDirectory, id + ".eml"), Ct);
        Assert.Equal("Subject: dots\r\n\r\n.\r\n..x\r\ny\r\na\n.\nb\r\n\nc\r\n", stored);

        // An empty message ends at once (SmtpServer alone waited for a CRLF before the dot).
        Assert.StartsWith("250", await client.CommandAsync("MAIL FROM:<>"), StringComparison.Ordinal);
        Assert.StartsWith("250", await client.CommandAsync($"RCPT TO:<alice@{h.Domain}>"), StringComparison.Ordinal);
        Assert.StartsWith("354", await client.CommandAsync("DATA"), StringComparison.Ordinal);
        Assert.StartsWith("250", await client.CommandAsync("."), StringComparison.Ordinal);

        var size = Assert.Single(await h.EventsWhenAsync(e => e.Count(x => x.Kind == "data" && x.Outcome == "ok") == 2),
            e => e.Kind == "data" && e.Size > 0).Size;
        Assert.Equal((ulong)Encoding.ASCII.GetByteCount(stored), size);
    }

    [Fact]
    public async Task AClientGoneMidData_LeavesNoFile_AndGivesItsBytesBack()
    {
        await using var h = await Harness.StartAsync(fixture);
        var client = await StartDataAsync(h, IPAddress.Parse("127.45.0.1"));
        await client.SendAsync(Body(256 << 10));
        await Harness.EventuallyAsync(() => h.Listener.DataBytesInFlight > 200 << 10);
        await client.DisposeAsync();

        await Harness.EventuallyAsync(() => h.Listener.DataBytesInFlight == 0 && h.Listener.ActiveSessions == 0);
        Assert.Empty(Directory.GetFiles(h.Listener.SpoolDirectory));
    }
}

/// <summary>Tests that measure the process's managed memory run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MemoryMeasured
{
    public const string Name = "memory measured";
}
