using Analytics.Testing;

namespace Analytics.Submission.Tests;

/// <summary>Spool files are recycled (renamed, their blocks kept), never deleted and created again per message.</summary>
public sealed class SpoolFilePoolTests
{
    private static FileStreamOptions NewFile => new()
    {
        Mode = FileMode.CreateNew,
        Access = FileAccess.Write,
        UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
    };

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    // What the commits of other messages do all the time: an fsync of the spool directory.
    private static Task SyncAsync(string directory) => DirectorySync.For(directory).SyncAsync().WaitAsync(TimeSpan.FromSeconds(10), Ct);

    [Fact]
    public async Task Release_ThenCreate_ReusesTheInode_OnceTheReleaseIsOnDisk_AndTheOldNameIsGone()
    {
        using var dir = new TempDirectory();
        var pool = SpoolFilePool.For(dir.Path);
        var old = Path.Combine(dir.Path, "a.eml");
        File.WriteAllText(old, "a deleted message's content");
        var inode = Inode(old);

        pool.Release(old);
        Assert.False(File.Exists(old));
        Assert.Equal(1, pool.Count);
        var pooled = Assert.Single(Directory.GetFiles(dir.Path));
        Assert.EndsWith(".tmp", pooled, StringComparison.Ordinal); // a crash leaves it to the queue's *.tmp cleanup

        // Before an fsync of the directory the old name could come back after a power loss: not reused yet.
        var early = Path.Combine(dir.Path, "early.eml.tmp");
        using (var file = pool.CreateFile(early))
        {
            Assert.NotEqual(inode, Inode(early));
        }

        File.Delete(early);
        Assert.Equal(1, pool.Count);
        await SyncAsync(dir.Path);

        var next = Path.Combine(dir.Path, "b.eml.tmp");
        using (var stream = pool.Create(next, NewFile))
        {
            stream.Write("new"u8);
        }

        Assert.Equal(0, pool.Count);
        Assert.Equal(inode, Inode(next));
        Assert.Equal("new", File.ReadAllText(next));
        Assert.Equal(["b.eml.tmp"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public async Task Create_NeverReplacesAFile_AndAPooledFileGoneMeansANewOne()
    {
        using var dir = new TempDirectory();
        var pool = SpoolFilePool.For(dir.Path);
        var existing = Path.Combine(dir.Path, "x.json.tmp");
        File.WriteAllText(existing, "keep");
        Assert.Throws<IOException>(() => pool.Create(existing, NewFile).Dispose());
        Assert.Equal("keep", File.ReadAllText(existing));

        var released = Path.Combine(dir.Path, "y.json");
        File.WriteAllText(released, "y");
        pool.Release(released);
        foreach (var tmp in Directory.GetFiles(dir.Path, "free-*.tmp"))
        {
            File.Delete(tmp); // the queue's start-up cleanup
        }

        await SyncAsync(dir.Path);

        var fresh = Path.Combine(dir.Path, "z.json.tmp");
        using (var stream = pool.Create(fresh, NewFile))
        {
            stream.Write("z"u8);
        }

        Assert.Equal("z", File.ReadAllText(fresh));
        Assert.Equal(0, pool.Count);
    }

    [Fact]
    public async Task CreateFile_ReusesAPooledInode_AndNothingOfItsOldContentOutlivesTheFsync_NorReplacesAFile()
    {
        using var dir = new TempDirectory();
        var pool = SpoolFilePool.For(dir.Path);
        var old = Path.Combine(dir.Path, "a.eml");
        File.WriteAllText(old, "a longer, deleted message's content");
        var inode = Inode(old);
        pool.Release(old);
        await SyncAsync(dir.Path);

        var next = Path.Combine(dir.Path, "b.eml.tmp");
        using (var file = pool.CreateFile(next))
        {
            file.Write("new"u8);
            file.Fsync();
            Assert.Equal(3, file.Length);
        }

        Assert.Equal(inode, Inode(next));
        Assert.Equal("new", File.ReadAllText(next));

        // Released again and reused for an empty message: empty.
        pool.Release(next);
        await SyncAsync(dir.Path);
        var empty = Path.Combine(dir.Path, "e.eml.tmp");
        using (var file = pool.CreateFile(empty))
        {
            file.Fsync();
        }

        Assert.Equal(inode, Inode(empty));
        Assert.Equal(0, new FileInfo(empty).Length);

        // A pooled file is never renamed over an existing name (RENAME_NOREPLACE), nor is one created there.
        var taken = Path.Combine(dir.Path, "c.json.tmp");
        File.WriteAllText(taken, "keep");
        File.WriteAllText(old, "m");
        pool.Release(old);
        await SyncAsync(dir.Path);
        Assert.Throws<IOException>(() => pool.CreateFile(taken).Dispose());
        Assert.Equal("keep", File.ReadAllText(taken));
    }

    [Fact]
    public void Release_PastCapacity_Deletes_AndAMissingFileIsIgnored()
    {
        using var dir = new TempDirectory();
        var pool = SpoolFilePool.For(dir.Path);
        for (var i = 0; i < SpoolFilePool.Capacity + 3; i++)
        {
            var path = Path.Combine(dir.Path, i + ".eml");
            File.WriteAllText(path, "m");
            pool.Release(path);
        }

        pool.Release(Path.Combine(dir.Path, "never-there.eml"));
        Assert.Equal(SpoolFilePool.Capacity, pool.Count);
        Assert.Equal(SpoolFilePool.Capacity, Directory.GetFiles(dir.Path).Length);
    }

    private static long Inode(string path)
    {
        var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%i", path]) { RedirectStandardOutput = true })!;
        var text = stat.StandardOutput.ReadToEnd();
        stat.WaitForExit();
        return long.Parse(text.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
