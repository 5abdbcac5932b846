using System.Buffers;
using System.Text;
using System.Text.Json;
using Analytics.Testing;

namespace Analytics.Submission.Tests;

/// <summary>The spool's commit: what it returns from is whole on disk under its own names; what fails leaves no mail.</summary>
public sealed class MailSpoolTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static SpoolEnvelope Envelope(string id, long size) =>
        new(id, "s@remote.example", ["a@local.example"], "127.0.0.1", 2525, "", "mx", "client", false, DateTimeOffset.UnixEpoch, "1", "node", size);

    [Fact]
    public async Task ConcurrentCommits_AllWhole_UnderTheirNames_SharingDirectoryFsyncs()
    {
        using var dir = new TempDirectory();
        var spool = new MailSpool(dir.Path);
        var before = spool.Sync.Requests;
        var ids = Enumerable.Range(0, 40).Select(i => spool.NewId(DateTimeOffset.UnixEpoch, (ulong)i)).ToArray();
        await Task.WhenAll(ids.Select(id => Task.Run(async () =>
        {
            var body = "Subject: " + id + "\r\n\r\nbody of " + id + "\r\n";
            var temp = spool.MessagePath(id) + ".tmp";
            var file = spool.Pool.CreateFile(temp);
            file.Write(Encoding.ASCII.GetBytes(body));
            var flushed = Task.Run(() =>
            {
                file.Fsync();
                file.Dispose();
            }, Ct);
            await spool.CommitAsync(Envelope(id, body.Length), temp, flushed, Ct);
        }, Ct)));

        foreach (var id in ids)
        {
            Assert.Equal("Subject: " + id + "\r\n\r\nbody of " + id + "\r\n", await File.ReadAllTextAsync(spool.MessagePath(id), Ct));
            var envelope = JsonSerializer.Deserialize<SpoolEnvelope>(await File.ReadAllBytesAsync(spool.EnvelopePath(id), Ct));
            Assert.Equal(id, envelope!.Id);
        }

        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
        Assert.Equal(40, spool.Sync.Requests - before);
    }

    [Fact]
    public async Task Commit_WhenTheMessageFsyncFails_Throws_AndLeavesNoMailUnderItsNames()
    {
        using var dir = new TempDirectory();
        var spool = new MailSpool(dir.Path);
        var id = spool.NewId(DateTimeOffset.UnixEpoch, 7);
        var temp = spool.MessagePath(id) + ".tmp";
        await File.WriteAllTextAsync(temp, "x\r\n", Ct);

        var failed = Task.FromException(new IOException("fsync failed: Input/output error (errno 5)", 5));
        await Assert.ThrowsAsync<IOException>(() => spool.CommitAsync(Envelope(id, 3), temp, failed, Ct));

        Assert.False(File.Exists(spool.MessagePath(id)));
        Assert.False(File.Exists(spool.EnvelopePath(id)));
        Assert.False(File.Exists(spool.EnvelopePath(id) + ".tmp"));
    }

    [Fact]
    public async Task WriteAsync_BuiltMessage_EndsWithCrlf_AndHasItsEnvelope()
    {
        using var dir = new TempDirectory();
        var spool = new MailSpool(dir.Path);
        var id = spool.NewId(DateTimeOffset.UnixEpoch, 9);
        await spool.WriteAsync(Envelope(id, 10), new ReadOnlySequence<byte>("Subject: x"u8.ToArray()), Ct);

        Assert.Equal("Subject: x\r\n", await File.ReadAllTextAsync(spool.MessagePath(id), Ct));
        Assert.True(File.Exists(spool.EnvelopePath(id)));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }
}
