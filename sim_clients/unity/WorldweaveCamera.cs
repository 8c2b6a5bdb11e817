// Sends this camera's pose to a worldweave gateway and shows the frame that comes back on a RawImage.
//
// Setup: add NetMQ and MessagePack-CSharp to the project (NuGet, or their Unity packages), run
//   worldweave serve --port 50051  and  worldweave gateway --zmq tcp://127.0.0.1:5555 --server 127.0.0.1:50051,
// create a world (worldId), put this component on a Camera and assign a RawImage.
// The wire schema is sim_clients/gateway/SCHEMA.md; the convention "unity" is docs/conventions.md's.
// The gateway converts poses: this script sends the Transform as it is (left-handed, Y up, metres).

using System;
using System.Collections.Generic;
using MessagePack;
using NetMQ;
using NetMQ.Sockets;
using UnityEngine;
using UnityEngine.UI;

namespace Worldweave
{
    /// <summary>Unity's convention, as worldweave.sim_clients.conventions.UNITY states it
    /// (tests/test_engine_code.py checks these constants against the Python module).</summary>
    public static class UnityConvention
    {
        public const string Name = "unity";
        /// <summary>Camera.fieldOfView is the vertical field of view, in degrees.</summary>
        public const string FovField = "fov_y_deg";
        public const float MetresPerUnit = 1f;
        /// <summary>W: canonical world axes (x forward, y left, z up) of a Unity vector (x right, y up, z forward).</summary>
        public static readonly float[,] WorldToCanonical = { { 0f, 0f, 1f }, { -1f, 0f, 0f }, { 0f, 1f, 0f } };
        /// <summary>A: the camera Transform's local axes (x right, y up, z forward) of an OpenCV camera vector
        /// (x right, y down, z forward).</summary>
        public static readonly float[,] OpenCvToCamera = { { 1f, 0f, 0f }, { 0f, -1f, 0f }, { 0f, 0f, 1f } };

        static Vector3 Mul(float[,] m, Vector3 v) => new Vector3(
            m[0, 0] * v.x + m[0, 1] * v.y + m[0, 2] * v.z,
            m[1, 0] * v.x + m[1, 1] * v.y + m[1, 2] * v.z,
            m[2, 0] * v.x + m[2, 1] * v.y + m[2, 2] * v.z);

        /// <summary>Canonical camera centre, metres, world Z up: s * W * position.</summary>
        public static Vector3 CanonicalPosition(Vector3 position) => MetresPerUnit * Mul(WorldToCanonical, position);

        /// <summary>Canonical viewing direction (the OpenCV camera's +z in world): W * R * A * (0, 0, 1).</summary>
        public static Vector3 CanonicalForward(Quaternion rotation) =>
            Mul(WorldToCanonical, rotation * Mul(OpenCvToCamera, new Vector3(0f, 0f, 1f)));
    }

    /// <summary>The gateway's schema (sim_clients/gateway/SCHEMA.md), checked by tests/test_engine_code.py.</summary>
    public static class Gateway
    {
        /// <summary>The envelope's "version": the schema's major version.</summary>
        public const int SchemaMajor = 2;
    }

    // ---- wire records (SCHEMA.md); string keys, one map per ZMQ message --------------------------------------

    [MessagePackObject]
    public class WireQuaternion
    {
        [Key("qw")] public double Qw;
        [Key("qx")] public double Qx;
        [Key("qy")] public double Qy;
        [Key("qz")] public double Qz;
    }

    [MessagePackObject]
    public class WirePose
    {
        /// <summary>Unity world position, metres.</summary>
        [Key("position")] public double[] Position;
        /// <summary>Transform.rotation, by name (Unity stores x, y, z, w).</summary>
        [Key("rotation")] public WireQuaternion Rotation;
    }

    [MessagePackObject]
    public class WireCamera
    {
        [Key("width")] public int Width;
        [Key("height")] public int Height;
        [Key(UnityConvention.FovField)] public double FovYDeg;
    }

    [MessagePackObject]
    public class WireFormat
    {
        /// <summary>"raw" (RGB8 rows top to bottom), "png" or "jpeg".</summary>
        [Key("image_encoding")] public string ImageEncoding = "raw";
    }

    [MessagePackObject]
    public class HelloBody
    {
        [Key("convention")] public string Convention = UnityConvention.Name;
        [Key("client_name")] public string ClientName = "unity";
    }

    [MessagePackObject]
    public class HelloRequest
    {
        [Key("version")] public int Version = Gateway.SchemaMajor;
        [Key("type")] public string Type = "hello";
        [Key("id")] public ulong Id;
        [Key("body")] public HelloBody Body = new HelloBody();
    }

    /// <summary>The body of "step" (the Step RPC's StepRequest) and "render" (RenderRequest).</summary>
    [MessagePackObject]
    public class StepBody
    {
        [Key("world_id")] public string WorldId;
        [Key("poses")] public WirePose[] Poses;
        [Key("intrinsics")] public WireCamera Intrinsics;
        [Key("format")] public WireFormat Format = new WireFormat();
    }

    [MessagePackObject]
    public class StepRequest
    {
        [Key("version")] public int Version = Gateway.SchemaMajor;
        /// <summary>"step" (generate and remember) or "render" (memory only).</summary>
        [Key("type")] public string Type = "step";
        [Key("id")] public ulong Id;
        [Key("body")] public StepBody Body;
    }

    [MessagePackObject]
    public class WireImage
    {
        [Key("width")] public int Width;
        [Key("height")] public int Height;
        [Key("encoding")] public string Encoding;
        [Key("data")] public byte[] Data;
    }

    [MessagePackObject]
    public class WireFrame
    {
        [Key("pose")] public WirePose Pose;
        /// <summary>Memory version after this frame.</summary>
        [Key("version")] public ulong Version;
        [Key("coverage")] public double Coverage;
        [Key("rgb")] public WireImage Rgb;
        [Key("frame_id")] public ulong? FrameId;
    }

    /// <summary>Any reply's body: "render_reply" fills Frames, "step_reply" (one per pose) Frame, "error" Code and
    /// Message, "hello_reply" none of them. MessagePack-CSharp skips the fields a reply type does not have.</summary>
    [MessagePackObject]
    public class ReplyBody
    {
        [Key("frames")] public WireFrame[] Frames;
        [Key("frame")] public WireFrame Frame;
        [Key("code")] public string Code;
        [Key("message")] public string Message;
    }

    [MessagePackObject]
    public class Reply
    {
        [Key("type")] public string Type;
        [Key("id")] public ulong? Id;
        [Key("body")] public ReplyBody Body;
    }

    // ---- the component ------------------------------------------------------------------------------------------

    [RequireComponent(typeof(Camera))]
    public class WorldweaveCamera : MonoBehaviour
    {
        public string gatewayAddress = "tcp://127.0.0.1:5555";
        public string worldId = "demo";
        public int width = 640;
        public int height = 480;
        [Tooltip("step: generate and remember; render: show memory only")]
        public string requestType = "step";
        public RawImage target;
        [Header("What worldweave sees (canonical: metres, Z up, OpenCV camera)")]
        public Vector3 canonicalPosition;
        public Vector3 canonicalForward;
        public float lastCoverage;

        DealerSocket socket;
        Texture2D texture;
        ulong nextId = 1;
        bool waiting;

        void Start()
        {
            AsyncIO.ForceDotNet.Force();  // NetMQ inside Unity's Mono
            socket = new DealerSocket();
            socket.Connect(gatewayAddress);
            Send(new HelloRequest { Id = nextId++ });
            waiting = true;
            texture = new Texture2D(width, height, TextureFormat.RGB24, false);
            if (target != null)
            {
                target.texture = texture;
                target.uvRect = new Rect(0f, 1f, 1f, -1f);  // worldweave rows run top to bottom, Unity's bottom to top
            }
        }

        void Update()
        {
            if (waiting && socket.TryReceiveFrameBytes(TimeSpan.Zero, out byte[] bytes))
            {
                waiting = false;
                Handle(MessagePackSerializer.Deserialize<Reply>(bytes));
            }
            if (!waiting)
            {
                Camera cam = GetComponent<Camera>();
                Quaternion r = transform.rotation;
                Vector3 p = transform.position;
                canonicalPosition = UnityConvention.CanonicalPosition(p);
                canonicalForward = UnityConvention.CanonicalForward(r);
                Send(new StepRequest
                {
                    Id = nextId++,
                    Type = requestType,
                    Body = new StepBody
                    {
                        WorldId = worldId,
                        Poses = new[] { new WirePose {
                            Position = new double[] { p.x, p.y, p.z },
                            Rotation = new WireQuaternion { Qw = r.w, Qx = r.x, Qy = r.y, Qz = r.z } } },
                        Intrinsics = new WireCamera { Width = width, Height = height, FovYDeg = cam.fieldOfView },
                    },
                });
                waiting = true;
            }
        }

        void Handle(Reply reply)
        {
            ReplyBody body = reply.Body;
            if (reply.Type == "error")
            {
                Debug.LogError($"worldweave gateway: {body.Code}: {body.Message}");
                return;
            }
            WireFrame frame = reply.Type == "step_reply" ? body.Frame
                : reply.Type == "render_reply" && body.Frames != null && body.Frames.Length > 0 ? body.Frames[0] : null;
            if (frame == null)
                return;
            lastCoverage = (float)frame.Coverage;
            if (frame.Rgb.Encoding == "raw" && frame.Rgb.Width == width && frame.Rgb.Height == height)
            {
                texture.LoadRawTextureData(frame.Rgb.Data);
                texture.Apply(false);
            }
        }

        void Send<T>(T message) => socket.SendFrame(MessagePackSerializer.Serialize(message));

        void OnDestroy()
        {
            socket?.Dispose();
            NetMQConfig.Cleanup(false);
        }
    }
}
