using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Analytics.Submission.Tests;

/// <summary>A bare SMTP client over a TcpClient, for what a polite client library will not send.</summary>
public sealed class RawSmtp : IAsyncDisposable
{
    private readonly TcpClient _client;
    private readonly NetworkStream _stream;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawSmtp(TcpClient client)
    {
        _client = client;
        _stream = client.GetStream();
    }

    public string Greeting { get; private set; } = "";

    /// <summary>Every line of the last reply read.</summary>
    public List<string> LastReplyLines { get; } = [];

    /// <param name="from">A loopback source address (127.0.0.0/8) to connect from; default the kernel's choice.</param>
    public static async Task<RawSmtp> ConnectAsync(IPEndPoint endPoint, bool readGreeting = true, IPAddress? from = null)
    {
        var client = from is null ? new TcpClient() : new TcpClient(new IPEndPoint(from, 0));
        client.ReceiveTimeout = 10_000;
        client.SendTimeout = 10_000;
        await client.ConnectAsync(endPoint, TestContext.Current.CancellationToken);
        var raw = new RawSmtp(client);
        if (readGreeting)
        {
            raw.Greeting = await raw.ReadReplyAsync() ?? "";
        }

        return raw;
    }

    /// <summary>Reads one reply (all its lines); returns the last line, or null when the server closed.</summary>
    public async Task<string?> ReadReplyAsync()
    {
        LastReplyLines.Clear();
        while (true)
        {
            var line = await ReadLineAsync();
            if (line is null)
            {
                return null;
            }

            LastReplyLines.Add(line);
            if (line.Length < 4 || line[3] != '-')
            {
                return line;
            }
        }
    }

    public async Task<string?> CommandAsync(string line)
    {
        await SendAsync(Encoding.UTF8.GetBytes(line + "\r\n"));
        return await ReadReplyAsync();
    }

    public async Task SendAsync(byte[] bytes)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await _stream.WriteAsync(bytes, timeout.Token);
    }

    /// <summary>True when the server closed the connection (EOF or reset) within a few seconds.</summary>
    public async Task<bool> IsClosedAsync()
    {
        try
        {
            while (true)
            {
                var line = await ReadLineAsync();
                if (line is null)
                {
                    return true;
                }
            }
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private async Task<string?> ReadLineAsync()
    {
        while (true)
        {
            var lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                var line = Encoding.Latin1.GetString(_buffer, _start, lf - _start).TrimEnd('\r');
                _start = lf + 1;
                return line;
            }

            if (_start > 0)
            {
                Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            int n;
            try
            {
                n = await _stream.ReadAsync(_buffer.AsMemory(_end), timeout.Token);
            }
            catch (IOException)
            {
                return null;
            }

            if (n == 0)
            {
                return null;
            }

            _end += n;
        }
    }

    public ValueTask DisposeAsync()
    {
        _client.Dispose();
        return ValueTask.CompletedTask;
    }
}
