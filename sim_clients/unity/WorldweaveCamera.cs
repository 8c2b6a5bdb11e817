// Sends this camera's pose to a worldweave gateway and shows the frame that comes back on a RawImage; or, as a rig,
// sends the pose of this GameObject (the body) with several cameras mounted on it and shows each camera's frame on
// its own RawImage.
//
// Setup: add NetMQ and MessagePack-CSharp to the project (NuGet, or their Unity packages), run
//   worldweave serve --port 50051  and  worldweave gateway --zmq tcp://127.0.0.1:5555 --server 127.0.0.1:50051,
// create a world (worldId), then either
//   - one camera: put this component on a Camera and assign a RawImage (target), or
//   - a rig: put it on the body GameObject, list Camera components under it in rigCameras (each with its image size
//     and RawImage); one "step" then carries the body pose and every camera's intrinsics and mount, memory is updated
//     once for all of them, and the frames come back one per camera, routed by camera_index (docs/sensors.md, "Rigs").
// The wire schema is sim_clients/gateway/SCHEMA.md; the convention "unity" is docs/conventions.md's.
// The gateway converts poses: this script sends Transforms as they are (left-handed, Y up, metres), a rig camera's
// mount as its transform relative to the body (UnityConvention.Mount).

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

        /// <summary>A rig camera's mount as the gateway reads it (RigCamera.mount, "unity"): the camera's transform
        /// relative to the body, T_e = T_body^-1 T_camera, in the body's local axes and world units (metres; the
        /// body's scale is left out, so a scaled body still gives a rigid mount). The gateway turns it into the
        /// canonical T_body_cam = [A^T R_e A | s A^T t_e] (conventions.Convention.mount_to_canonical), and the body
        /// pose is sent like a camera's, so body pose x mount is exactly the pose this camera would send alone.</summary>
        public static WirePose Mount(Transform body, Transform camera)
        {
            Vector3 t = Quaternion.Inverse(body.rotation) * (camera.position - body.position);
            Quaternion r = Quaternion.Inverse(body.rotation) * camera.rotation;
            return WirePose.Of(t, r);
        }
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
        /// <summary>Unity world position, metres (a rig mount: relative to the body, in its axes).</summary>
        [Key("position")] public double[] Position;
        /// <summary>Transform.rotation, by name (Unity stores x, y, z, w).</summary>
        [Key("rotation")] public WireQuaternion Rotation;

        public static WirePose Of(Vector3 p, Quaternion r) => new WirePose
        {
            Position = new double[] { p.x, p.y, p.z },
            Rotation = new WireQuaternion { Qw = r.w, Qx = r.x, Qy = r.y, Qz = r.z },
        };
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

    /// <summary>One camera of a rig (RigCamera): its own intrinsics and its mount on the body.</summary>
    [MessagePackObject]
    public class WireRigCamera
    {
        [Key("intrinsics")] public WireCamera Intrinsics;
        /// <summary>UnityConvention.Mount: the camera's transform relative to the body.</summary>
        [Key("mount")] public WirePose Mount;
    }

    [MessagePackObject]
    public class WireRig
    {
        /// <summary>In the order their frames come back (camera_index).</summary>
        [Key("cameras")] public WireRigCamera[] Cameras;
    }

    /// <summary>The body of a rig "step": poses are body poses; no "intrinsics" (each camera has its own).</summary>
    [MessagePackObject]
    public class RigStepBody
    {
        [Key("world_id")] public string WorldId;
        [Key("poses")] public WirePose[] Poses;
        [Key("rig")] public WireRig Rig;
        [Key("format")] public WireFormat Format = new WireFormat();
    }

    /// <summary>A rig step: only "step" takes a rig (Render has none).</summary>
    [MessagePackObject]
    public class RigStepRequest
    {
        [Key("version")] public int Version = Gateway.SchemaMajor;
        [Key("type")] public string Type = "step";
        [Key("id")] public ulong Id;
        [Key("body")] public RigStepBody Body;
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

    /// <summary>Any reply's body: "render_reply" fills Frames, "step_reply" (one per frame: per pose, with a rig per
    /// camera of each body pose) Frame, CameraIndex and LastInRequest, "error" Code and Message, "hello_reply" none
    /// of them. MessagePack-CSharp skips the fields a reply type does not have.</summary>
    [MessagePackObject]
    public class ReplyBody
    {
        [Key("frames")] public WireFrame[] Frames;
        [Key("frame")] public WireFrame Frame;
        /// <summary>With a rig: the index in rigCameras of the camera that made Frame.</summary>
        [Key("camera_index")] public uint CameraIndex;
        /// <summary>Whether this is the last step_reply of the request (then the next request can go).</summary>
        [Key("last_in_request")] public bool LastInRequest;
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

    /// <summary>A camera of the rig: a Camera under the body, the image size to ask for, where to show its frames.</summary>
    [Serializable]
    public class RigCameraSlot
    {
        public Camera camera;
        public int width = 640;
        public int height = 480;
        public RawImage target;
        [NonSerialized] public Texture2D texture;
    }

    public class WorldweaveCamera : MonoBehaviour
    {
        public string gatewayAddress = "tcp://127.0.0.1:5555";
        public string worldId = "demo";
        [Header("One camera: this GameObject's Camera")]
        public int width = 640;
        public int height = 480;
        [Tooltip("step: generate and remember; render: show memory only (one camera only)")]
        public string requestType = "step";
        public RawImage target;
        [Header("A rig: Cameras under this GameObject (the body); empty means one camera")]
        [Tooltip("Each camera's frames go to its own target, by camera_index (this list's order)")]
        public RigCameraSlot[] rigCameras = new RigCameraSlot[0];
        [Header("What worldweave sees (canonical: metres, Z up, OpenCV camera; with a rig, the body)")]
        public Vector3 canonicalPosition;
        public Vector3 canonicalForward;
        public float lastCoverage;

        DealerSocket socket;
        Texture2D texture;
        ulong nextId = 1;
        bool waiting;

        bool IsRig => rigCameras.Length > 0;

        void Start()
        {
            if (!CheckSetup())
            {
                enabled = false;
                return;
            }
            AsyncIO.ForceDotNet.Force();  // NetMQ inside Unity's Mono
            socket = new DealerSocket();
            socket.Connect(gatewayAddress);
            Send(new HelloRequest { Id = nextId++ });
            waiting = true;
            if (IsRig)
            {
                foreach (RigCameraSlot slot in rigCameras)
                    slot.texture = Show(slot.target, slot.width, slot.height);
            }
            else
                texture = Show(target, width, height);
        }

        /// <summary>One camera needs a Camera on this GameObject; a rig needs Cameras under it and "step".</summary>
        bool CheckSetup()
        {
            if (!IsRig)
            {
                if (GetComponent<Camera>() != null)
                    return true;
                Debug.LogError("worldweave: put WorldweaveCamera on a Camera, or list rigCameras under this body");
                return false;
            }
            if (requestType != "step")
            {
                Debug.LogError($"worldweave: a rig steps (only Step takes a rig), not \"{requestType}\"");
                return false;
            }
            for (int i = 0; i < rigCameras.Length; i++)
            {
                Camera cam = rigCameras[i].camera;
                if (cam == null || !cam.transform.IsChildOf(transform))
                {
                    Debug.LogError($"worldweave: rigCameras[{i}] must be a Camera under {name}, the rig's body");
                    return false;
                }
            }
            return true;
        }

        static Texture2D Show(RawImage image, int w, int h)
        {
            Texture2D t = new Texture2D(w, h, TextureFormat.RGB24, false);
            if (image != null)
            {
                image.texture = t;
                image.uvRect = new Rect(0f, 1f, 1f, -1f);  // worldweave rows run top to bottom, Unity's bottom to top
            }
            return t;
        }

        void Update()
        {
            // A step answers one step_reply per frame (a rig: one per camera); the last has last_in_request.
            while (waiting && socket.TryReceiveFrameBytes(TimeSpan.Zero, out byte[] bytes))
            {
                Reply reply = MessagePackSerializer.Deserialize<Reply>(bytes);
                waiting = reply.Type == "step_reply" && !reply.Body.LastInRequest;
                Handle(reply);
            }
            if (!waiting)
            {
                canonicalPosition = UnityConvention.CanonicalPosition(transform.position);
                canonicalForward = UnityConvention.CanonicalForward(transform.rotation);
                if (IsRig)
                    SendRig();
                else
                    SendCamera();
                waiting = true;
            }
        }

        void SendCamera()
        {
            Camera cam = GetComponent<Camera>();
            Send(new StepRequest
            {
                Id = nextId++,
                Type = requestType,
                Body = new StepBody
                {
                    WorldId = worldId,
                    Poses = new[] { WirePose.Of(transform.position, transform.rotation) },
                    Intrinsics = new WireCamera { Width = width, Height = height, FovYDeg = cam.fieldOfView },
                },
            });
        }

        /// <summary>The body pose (this Transform, sent as a camera's would be) and every camera with its own
        /// intrinsics and its mount, read at one instant.</summary>
        void SendRig()
        {
            WireRigCamera[] cameras = new WireRigCamera[rigCameras.Length];
            for (int i = 0; i < rigCameras.Length; i++)
            {
                RigCameraSlot slot = rigCameras[i];
                cameras[i] = new WireRigCamera
                {
                    Intrinsics = new WireCamera { Width = slot.width, Height = slot.height, FovYDeg = slot.camera.fieldOfView },
                    Mount = UnityConvention.Mount(transform, slot.camera.transform),
                };
            }
            Send(new RigStepRequest
            {
                Id = nextId++,
                Body = new RigStepBody
                {
                    WorldId = worldId,
                    Poses = new[] { WirePose.Of(transform.position, transform.rotation) },
                    Rig = new WireRig { Cameras = cameras },
                },
            });
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
            if (!IsRig)
                Load(texture, frame.Rgb, width, height);
            else if (body.CameraIndex < rigCameras.Length)
            {
                RigCameraSlot slot = rigCameras[body.CameraIndex];
                Load(slot.texture, frame.Rgb, slot.width, slot.height);
            }
        }

        static void Load(Texture2D t, WireImage rgb, int w, int h)
        {
            if (rgb.Encoding == "raw" && rgb.Width == w && rgb.Height == h)
            {
                t.LoadRawTextureData(rgb.Data);
                t.Apply(false);
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
