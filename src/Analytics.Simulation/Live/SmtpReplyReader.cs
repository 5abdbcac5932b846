using System.Globalization;
using System.Text;

namespace Analytics.Simulation.Live;

/// <summary>Reads SMTP replies (multi-line included) from a stream; code 0 when the connection ended. Shared by the live simulator and the scenario bots.</summary>
internal sealed class SmtpReplyReader
{
    private readonly Stream _stream;
    private readonly byte[] _buffer = new byte[8192];
    private int _start;
    private int _end;

    public SmtpReplyReader(Stream stream) => _stream = stream;

    public async Task<(int Code, string Text)> ReadAsync(CancellationToken cancellationToken)
    {
        var text = new StringBuilder();
        while (true)
        {
            var line = await ReadLineAsync(cancellationToken);
            if (line is null)
            {
                return (0, text.ToString());
            }

            text.AppendLine(line);
            if (line.Length < 4 || line[3] != '-')
            {
                return (line.Length >= 3 && int.TryParse(line.AsSpan(0, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var code) ? code : 0, text.ToString());
            }
        }
    }

    private async Task<string?> ReadLineAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                var line = Encoding.ASCII.GetString(_buffer, _start, lf - _start).TrimEnd('\r');
                _start = lf + 1;
                return line;
            }

            if (_start > 0)
            {
                Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            if (_end == _buffer.Length)
            {
                return null;
            }

            var n = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken);
            if (n == 0)
            {
                return null;
            }

            _end += n;
        }
    }
}
